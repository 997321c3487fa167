// The simulation TEE (docs/sim.md).
export {
  parseSimReport,
  createSimReport,
  simPlatformId,
  SIM_MAGIC,
  SIM_REPORT_VERSION,
  SIM_FLAG_DEBUG,
  SIM_CERT_OFFSET,
  SIM_SIGNATURE_SIZE,
  SIM_MAX_CERT_SIZE,
} from './report.js';
export type { SimReport, CreateSimReportInput } from './report.js';
export { verifySimReport } from './verify.js';
export type { VerifySimOptions } from './verify.js';
export { simMeasurement, simMeasurementFraming, SIM_MEASURE_LABEL } from './measure.js';
export {
  generateSimHardware,
  exportSimHardware,
  importSimHardware,
  simRootAnchor,
  simReportFrom,
  SIM_HARDWARE_FILES,
} from './hardware.js';
export type { SimHardware, SimHardwareFiles } from './hardware.js';
