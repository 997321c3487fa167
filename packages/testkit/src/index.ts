export {
  vectorsDir,
  requireVectors,
  readVector,
  readVectorText,
  MISSING_VECTORS,
} from './vectors.js';
