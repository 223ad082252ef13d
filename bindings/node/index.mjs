// ES module entry: the same binding as index.js.
import wv from './index.js';

export const {
  load, Model, Session, WvError, Status, version, abiVersion, libraryPath, HEADER_ABI_VERSION, SEED_RANDOM,
} = wv;
export default wv;
