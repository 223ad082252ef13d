'use strict';
// Runs wv_load on a worker thread, so that loading a large checkpoint never blocks the main
// thread's event loop, and so that wv_last_error (which is per thread) is read on the thread
// that failed. The model handle (a pointer, as a BigInt) goes back to the main thread, which
// owns it from then on.
const { parentPort, workerData } = require('node:worker_threads');
const { open, koffi } = require('./native.js');

const { file, dir, device, abort, progress: reportProgress } = workerData;
const c = open(file);
const aborted = new Int32Array(abort);
let last = -1;
const progress = koffi.register((userData, fraction) => {
  if (reportProgress && fraction !== last) {
    last = fraction;
    parentPort.postMessage({ progress: fraction });
  }
  return Atomics.load(aborted, 0) ? 1 : 0;
}, koffi.pointer(c.types.progress));
try {
  const opts = c.defaults(c.wv_load_options_init, c.types.loadOptions);
  opts.device = device;
  opts.progress = progress;
  const out = [null];
  const status = c.wv_load(dir, opts, out);
  const message = status === 0 ? '' : c.wv_last_error();
  parentPort.postMessage({ status, message, handle: status === 0 ? out[0] : null });
} finally {
  koffi.unregister(progress);
}
