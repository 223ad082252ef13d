'use strict';
// Tests of the Node binding against libwv and the bundled KJV demo model (on the CPU).
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawnSync } = require('node:child_process');

const wv = require('..');
const { load, WvError } = wv;

const MODEL = process.env.WV_TEST_MODEL || path.resolve(__dirname, '..', '..', '..', 'models', 'kjv-tiny');
const PROMPT = 'In the beginning God created';
// The start of the model's greedy continuation of PROMPT (models/kjv-tiny/golden.json).
const GREEDY = ' the heavens, and the heavens';

async function collect(pieces) {
  let text = '';
  let n = 0;
  for await (const piece of pieces) {
    text += piece;
    n++;
  }
  return { text, n };
}

async function rejectsWith(promiseOrFn, code) {
  let err;
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof WvError, `expected a WvError ${code}, got ${err}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.status, wv.Status[code.replace(/^WV_(ERR_)?/, '')]);
  assert.equal(err.name, 'WvError');
  return err;
}

let model;
before(async () => {
  model = await load(MODEL, { device: 'cpu' });
});
after(() => model.close());

describe('the library', () => {
  test('is found and speaks the ABI of the binding', () => {
    assert.ok(fs.existsSync(wv.libraryPath()) || !wv.libraryPath().includes('/'));
    const abi = wv.abiVersion();
    assert.equal(abi >>> 16, wv.HEADER_ABI_VERSION >>> 16);
    assert.ok((abi & 0xffff) >= (wv.HEADER_ABI_VERSION & 0xffff));
    assert.match(wv.version(), /^\d+\.\d+\.\d+/);
  });

  // Each case runs in a child process: the library is opened once per process.
  const cc = spawnSync('cc', ['--version']).status === 0;
  for (const c of [
    { name: 'refuses a libwv of another ABI', src: 'uint32_t wv_abi_version(void) { return 2u << 16; }', code: 'WV_ERR_UNSUPPORTED', says: 'has ABI version 2.0, but this binding was built for 1.0' },
    { name: 'refuses a library without the functions', src: 'uint32_t wv_abi_version(void) { return 1u << 16; }', code: 'WV_ERR_IO', says: 'lacks a function' },
    { name: 'reports a missing library', src: null, code: 'WV_ERR_IO', says: 'WV_LIBRARY_PATH is' },
  ]) {
    test(c.name, { skip: c.src && !cc ? 'no C compiler' : false }, () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wv-node-test-'));
      let lib = path.join(dir, 'missing.so');
      if (c.src) {
        fs.writeFileSync(path.join(dir, 'fake.c'), `#include <stdint.h>\n${c.src}\n`);
        lib = path.join(dir, 'libfake.so');
        execFileSync('cc', ['-shared', '-fPIC', '-o', lib, path.join(dir, 'fake.c')]);
      }
      const script = `require(${JSON.stringify(path.resolve(__dirname, '..'))}).load(${JSON.stringify(MODEL)})
        .then(() => console.log(JSON.stringify({ loaded: true })),
              (e) => console.log(JSON.stringify({ name: e.name, code: e.code, status: e.status, message: e.message })))`;
      const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, WV_LIBRARY_PATH: lib } });
      const r = JSON.parse(out.toString());
      fs.rmSync(dir, { recursive: true, force: true });
      assert.equal(r.name, 'WvError', JSON.stringify(r));
      assert.equal(r.code, c.code, r.message);
      assert.ok(r.message.includes(c.says), r.message);
    });
  }
});

describe('load', () => {
  test('a missing folder is WV_ERR_IO', async () => {
    const e = await rejectsWith(load('/nonexistent/wv-model'), 'WV_ERR_IO');
    assert.match(e.message, /^wv_load: i\/o error: .*\/nonexistent\/wv-model/);
    assert.equal(e.op, 'wv_load');
  });

  test('a bad device is WV_ERR_INVALID_ARGUMENT', async () => {
    await rejectsWith(load(MODEL, { device: 'tpu:7' }), 'WV_ERR_INVALID_ARGUMENT');
  });

  test('a broken config is WV_ERR_MODEL_FORMAT', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wv-node-test-'));
    fs.writeFileSync(path.join(dir, 'config.json'), '{ not json');
    await rejectsWith(load(dir), 'WV_ERR_MODEL_FORMAT');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('bad arguments are WV_ERR_INVALID_ARGUMENT', async () => {
    await rejectsWith(load('models\0x'), 'WV_ERR_INVALID_ARGUMENT');
    await rejectsWith(load(42), 'WV_ERR_INVALID_ARGUMENT');
  });

  test('an aborted signal cancels', async () => {
    const reason = new Error('no thanks');
    const e = await rejectsWith(load(MODEL, { signal: AbortSignal.abort(reason) }), 'WV_ERR_CANCELLED');
    assert.equal(e.cause, reason);
  });

  test('reports progress, off the main thread', async () => {
    const seen = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const m = await load(MODEL, { device: 'cpu', onProgress: (f) => seen.push(f) });
    clearInterval(timer);
    m.close();
    assert.ok(seen.length > 0);
    assert.equal(seen.at(-1), 1);
    assert.ok(ticks > 0, 'the event loop ran while loading');
  });

  test('model info', () => {
    const info = model.info;
    assert.equal(info.contextLength, 512);
    assert.equal(info.vocabSize, 32000);
    assert.equal(info.quantBits, 4);
    assert.equal(info.bosToken, 1);
    assert.equal(info.device, 'cpu');
    assert.ok(info.deviceDescription.length > 0);
  });
});

describe('generation', () => {
  test('greedy, with for await', async () => {
    const s = model.session();
    const { text, n } = await collect(s.generate(PROMPT, { temperature: 0, maxTokens: 12 }));
    assert.ok(text.startsWith(GREEDY), text);
    assert.ok(n >= 10 && n <= 12, `${n} pieces`);
    assert.equal(s.tokenCount, 6 + 12);
    const again = await collect(model.session().generate(PROMPT, { temperature: 0, maxTokens: 12 }));
    assert.equal(again.text, text);
    // The conversation continues where it stopped.
    assert.ok((await collect(s.generate('', { temperature: 0, maxTokens: 4 }))).text.length > 0);
    s.close();
  });

  test('chat, stop strings, seeds', async () => {
    const s = model.session();
    const reply = await collect(s.chat('Who made the heaven?', { temperature: 0, maxTokens: 24 }));
    assert.ok(reply.text.length > 0);
    const stopped = await collect(model.session().generate(PROMPT, { temperature: 0, maxTokens: 40, stop: ['and'] }));
    assert.equal(stopped.text, ' the heavens, ');
    const t = model.session();
    const a = await collect(t.generate(PROMPT, { seed: 42, maxTokens: 8 }));
    t.reset();
    const b = await collect(t.generate(PROMPT, { seed: 42n, maxTokens: 8 }));
    assert.equal(a.text, b.text);
  });

  test('the event loop keeps running during generation', async () => {
    const s = model.session();
    let last = performance.now();
    let worst = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
    }, 2);
    const started = performance.now();
    await collect(s.generate(PROMPT, { temperature: 0, maxTokens: 200 }));
    const took = performance.now() - started;
    clearInterval(timer);
    // Generating took a while, but the timer never waited for more than a small part of it.
    assert.ok(worst < Math.max(250, took / 4), `a timer waited ${worst} ms of ${took} ms`);
  });

  test('context full', async () => {
    const s = model.session({ contextLength: 16 });
    assert.equal(s.contextLength, 16);
    let n = 0;
    await rejectsWith(async () => {
      for await (const _ of s.generate(PROMPT, { temperature: 0, maxTokens: 0 })) n++;
    }, 'WV_ERR_CONTEXT_FULL');
    assert.ok(n > 0);
  });

  test('bad options are WV_ERR_INVALID_ARGUMENT', async () => {
    const s = model.session();
    await rejectsWith(collect(s.generate('a\0b')), 'WV_ERR_INVALID_ARGUMENT');
    await rejectsWith(collect(s.generate('x', { maxTokens: -1 })), 'WV_ERR_INVALID_ARGUMENT');
    await rejectsWith(collect(s.generate('x', { stop: [''] })), 'WV_ERR_INVALID_ARGUMENT');
  });
});

describe('cancellation', () => {
  test('an AbortSignal cancels mid-stream', async () => {
    const s = model.session();
    const ac = new AbortController();
    let n = 0;
    const e = await rejectsWith(async () => {
      for await (const _ of s.generate(PROMPT, { temperature: 0, maxTokens: 0, signal: ac.signal })) {
        if (++n === 3) ac.abort(new Error('enough'));
      }
    }, 'WV_ERR_CANCELLED');
    assert.equal(e.cause.message, 'enough');
    assert.equal(n, 3, 'nothing is yielded after the abort');
    // The tokens generated stay; the session is free for the next call.
    assert.ok(s.tokenCount > 6);
    assert.ok((await collect(s.generate(' and', { temperature: 0, maxTokens: 2 }))).n > 0);
  });

  test('a signal aborted before the start cancels at once', async () => {
    const s = model.session();
    await rejectsWith(collect(s.generate(PROMPT, { signal: AbortSignal.abort() })), 'WV_ERR_CANCELLED');
    assert.equal(s.tokenCount, 0);
  });

  test('a timeout signal cancels', async () => {
    const s = model.session();
    await rejectsWith(collect(s.generate(PROMPT, { temperature: 0, maxTokens: 0, signal: AbortSignal.timeout(50) })), 'WV_ERR_CANCELLED');
  });

  test('session.cancel() cancels', async () => {
    const s = model.session();
    let n = 0;
    await rejectsWith(async () => {
      for await (const _ of s.chat('Who made the heaven?', { temperature: 0, maxTokens: 0 })) {
        if (++n === 2) s.cancel();
      }
    }, 'WV_ERR_CANCELLED');
  });

  test('breaking out of the loop stops generation without an error', async () => {
    const s = model.session();
    let n = 0;
    for await (const _ of s.generate(PROMPT, { temperature: 0, maxTokens: 0 })) {
      if (++n === 2) break;
    }
    assert.ok(s.tokenCount >= 6 + 2);
    assert.ok((await collect(s.generate('', { temperature: 0, maxTokens: 2 }))).n > 0);
  });
});

describe('sessions', () => {
  test('two sessions on one model generate at once', async () => {
    const want = (await collect(model.session().generate(PROMPT, { temperature: 0, maxTokens: 24 }))).text;
    const a = model.session();
    const b = model.session();
    const pieces = { a: 0, b: 0 };
    let overlap = false;
    const run = async (s, key) => {
      let text = '';
      for await (const piece of s.generate(PROMPT, { temperature: 0, maxTokens: 24 })) {
        text += piece;
        pieces[key]++;
        if (pieces.a > 0 && pieces.b > 0 && (pieces.a < 10 || pieces.b < 10)) overlap = true;
      }
      return text;
    };
    const [ta, tb] = await Promise.all([run(a, 'a'), run(b, 'b')]);
    assert.equal(ta, want);
    assert.equal(tb, want);
    assert.ok(overlap, 'the two generations interleaved');
  });

  test('a second generation on a busy session is WV_ERR_BUSY', async () => {
    const s = model.session();
    let inner;
    for await (const _ of s.generate(PROMPT, { temperature: 0, maxTokens: 4 })) {
      if (!inner) inner = await collect(s.generate('x')).catch((e) => e);
    }
    assert.ok(inner instanceof WvError);
    assert.equal(inner.code, 'WV_ERR_BUSY');
  });

  test('close', async () => {
    const m = await load(MODEL, { device: 'cpu' });
    const s = m.session();
    m.close();
    m.close();
    assert.ok(m.closed);
    assert.throws(() => m.session(), (e) => e instanceof WvError && e.code === 'WV_ERR_INVALID_ARGUMENT' && /closed/.test(e.message));
    // A session outlives its model.
    assert.ok((await collect(s.generate(PROMPT, { temperature: 0, maxTokens: 6 }))).text.startsWith(' the heavens'));
    // Closing a session mid-generation cancels it.
    let n = 0;
    await rejectsWith(async () => {
      for await (const _ of s.generate('', { temperature: 0, maxTokens: 0 })) {
        if (++n === 2) s.close();
      }
    }, 'WV_ERR_CANCELLED');
    await rejectsWith(collect(s.generate('x')), 'WV_ERR_INVALID_ARGUMENT');
    assert.throws(() => s.tokenCount, WvError);
    s.cancel();
    s.close();
  });

  test('tokens and state', async () => {
    assert.deepEqual(model.tokenize(PROMPT), [1, 512, 278, 6763, 4177, 2825]);
    assert.equal(model.tokenize(PROMPT, { addSpecial: false }).length, 5);
    assert.equal(model.detokenize([1, 512, 278, 6763, 4177, 2825]), PROMPT);
    assert.equal(model.detokenize(model.tokenize('héllo wörld ✓', { addSpecial: false })), 'héllo wörld ✓');
    assert.equal(model.tokenPiece(2), '</s>');
    assert.throws(() => model.tokenPiece(1 << 30), (e) => e.code === 'WV_ERR_INVALID_ARGUMENT');

    const s = model.session();
    await collect(s.generate(PROMPT, { temperature: 0, maxTokens: 4 }));
    const state = s.saveState();
    const ids = s.tokens();
    assert.equal(ids.length, 10);
    const next = (await collect(s.generate('', { temperature: 0, maxTokens: 6 }))).text;
    const t = model.session();
    t.restoreState(state);
    assert.deepEqual(t.tokens(), ids);
    assert.equal((await collect(t.generate('', { temperature: 0, maxTokens: 6 }))).text, next);
    const file = path.join(os.tmpdir(), `wv-node-test-${process.pid}.state`);
    s.saveFile(file);
    t.restoreFile(file);
    fs.rmSync(file, { force: true });
    assert.throws(() => t.restoreState(Buffer.from('garbage!')), (e) => e.code === 'WV_ERR_MODEL_FORMAT');
    t.setTokens(ids.slice(0, 6));
    t.truncate(3);
    assert.equal(t.tokenCount, 3);
  });
});

describe('packaging', () => {
  test('the ES module entry exports the same API', async () => {
    const esm = await import('../index.mjs');
    assert.equal(esm.load, wv.load);
    assert.equal(esm.WvError, wv.WvError);
  });

  const tsc = path.join(__dirname, '..', 'node_modules', '.bin', 'tsc');
  test('the TypeScript declarations type-check', { skip: fs.existsSync(tsc) ? false : 'typescript is not installed' }, () => {
    const r = spawnSync(tsc, ['-p', path.join(__dirname, '..', 'tsconfig.json')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});
