// Public surface of @cloister/coordinator.
export { createCoordinator, createLogger, parseListen } from './coordinator.js';
export { coordinatorSimMeasurement, COORDINATOR_VERSION } from './measurement.js';
export type { CoordinatorOptions, RunningCoordinator } from './coordinator.js';
export { COORDINATOR_ERRORS, coordinatorError } from './error-codes.js';
export type { CoordinatorErrorCode } from './error-codes.js';
export { CoordinatorService } from './service.js';
export type { CoordinatorAttester, ServiceOptions, InstanceRecord } from './service.js';
export { dispatchingVerifier } from './evidence-verifier.js';
export type { EvidenceVerifier, EvidenceInput, TypeVerifier } from './evidence-verifier.js';
export { buildServer, DEFAULT_BODY_LIMIT } from './http/server.js';
export type { ServerOptions } from './http/server.js';
export { Store } from './store/store.js';
export type { TableName, PutOptions, Durability, StoreOptions } from './store/store.js';
export { DerivedKeySealer } from './store/sealer.js';
export type { Sealer } from './store/sealer.js';
export { NonceStore, DEFAULT_MAX_OUTSTANDING_NONCES } from './nonces.js';
export { LiveInstances } from './live-instances.js';
export { bundleSealer, openBundle, sealBundle } from './bundle-seal.js';
export type { BundleSealer } from './bundle-seal.js';
export {
  createRootCa,
  createIntermediateCa,
  issueLeaf,
  issueServerCert,
  agentSpki,
  onP256,
  p256Spki,
  leafDnsNames,
  loadCa,
  spiffeId,
  spkiFromCsr,
} from './mesh-ca.js';
export type { StoredCa, LoadedCa, IssuedCert } from './mesh-ca.js';
export { generateSecret } from './manifest.js';
export { createMetrics } from './metrics.js';
export type { CoordinatorMetrics } from './metrics.js';
