// Public surface of @cloister/agent: what runs inside the TEE in front of the unmodified program.
export { AGENT_ERRORS, agentError } from './error-codes.js';
export type { AgentErrorCode } from './error-codes.js';

// Evidence providers.
export type {
  AgentEvidence,
  AgentTeeType,
  EvidenceProvider,
  ProviderFs,
  SnpPlatformCerts,
} from './providers/types.js';
export { nodeProviderFs } from './providers/fs.js';
export { tsmProvider, TSM_DEFAULT_ROOT } from './providers/tsm.js';
export type { TsmProviderOptions } from './providers/tsm.js';
export { gramineProvider, GRAMINE_DEFAULT_ROOT } from './providers/gramine.js';
export type { GramineProviderOptions } from './providers/gramine.js';
export { simProvider, simProgramMeasurement, SIM_DIR_ENV } from './providers/sim.js';
export type { SimProviderOptions } from './providers/sim.js';
export {
  parseCertTable,
  parseCertTableEntries,
  buildCertTable,
  SNP_CERT_GUIDS,
} from './providers/cert-table.js';
export type { CertTableEntry } from './providers/cert-table.js';
export { reportDataOf } from './providers/report-data.js';

// Activation.
export { activate, newActivationKey, buildCsr, wireEvidence, releaseInstance } from './activate.js';
export type { Activation, ActivationKey, ActivateOptions } from './activate.js';
export { CoordinatorClient } from './coordinator-client.js';
export type { CoordinatorClientOptions, CoordinatorProblem } from './coordinator-client.js';
export { checkBundleCertificate } from './bundle.js';
export type { MeshIdentity } from './bundle.js';

// Files, launch, run.
export {
  FILES_ENV,
  FILES_TOKEN,
  createFilesRoot,
  useFilesRoot,
  mapPath,
  writeFiles,
  writeFileAtomic,
  expandFilesToken,
} from './files.js';
export { launch, resolveExecutable, exitStatus, FORWARDED_SIGNALS } from './launch.js';
export type { LaunchSpec, Launched, ProgramStdout } from './launch.js';
export { runAgent, writeBundleFiles, MESH_FILES } from './run.js';
export { programEnv } from './env.js';
export type { RunAgentOptions, AgentLog } from './run.js';
export { runImageWorkload, resolveImagePin, imageMeasuredArgs } from './image-workload.js';
export type { ImageWorkloadOptions, RunImageWorkloadOptions } from './image-workload.js';

// Mesh proxy.
export { startMeshProxy, parseHostPort } from './mesh/proxy.js';
export type {
  MeshProxy,
  MeshProxyOptions,
  MeshCredentials,
  MeshEvent,
  IngressAccess,
  IngressRoute,
  EgressRoute,
} from './mesh/proxy.js';
export { meshRoutes, parsePeers, PEERS_ENV } from './mesh/routes.js';
export type { PeerMap, PeerAddress, MeshRoutes } from './mesh/routes.js';
export { spiffeId, spiffeIdOfCert, workloadOf } from './mesh/spiffe.js';
