export {
  vectorsDir,
  requireVectors,
  readVector,
  readVectorText,
  MISSING_VECTORS,
} from './vectors.js';
export { startFakeVendorServices } from './fake-vendor-services.js';
export type {
  FakeVendorConfig,
  FakeVendorServices,
  FakeIntelEntry,
  FakeVcekEntry,
  FakeKdsChain,
  RecordedRequest,
  ScriptedResponse,
} from './fake-vendor-services.js';
export { opensslSelfSignedP256 } from './openssl.js';
export { hasCode } from './assertions.js';
export { freePort } from './net.js';
