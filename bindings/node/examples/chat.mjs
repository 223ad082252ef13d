// Streams a reply; Ctrl-C (or --timeout MS) aborts it through an AbortSignal.
//
//   node examples/chat.mjs [--model DIR] [--raw] [--max-tokens N] [--timeout MS] [PROMPT...]
import { parseArgs } from 'node:util';
import { load, WvError } from '../index.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    model: { type: 'string', default: new URL('../../../models/kjv-tiny', import.meta.url).pathname },
    device: { type: 'string', default: 'auto' },
    raw: { type: 'boolean', default: false },
    'max-tokens': { type: 'string', default: '128' },
    temperature: { type: 'string', default: '0' },
    timeout: { type: 'string' },
  },
});
const prompt = positionals.join(' ') || 'Who made the heaven and the earth?';

const model = await load(values.model, { device: values.device });
const session = model.session();

const controller = new AbortController();
process.once('SIGINT', () => controller.abort(new Error('interrupted')));
const signals = [controller.signal];
if (values.timeout) signals.push(AbortSignal.timeout(Number(values.timeout)));
const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];

const options = { maxTokens: Number(values['max-tokens']), temperature: Number(values.temperature), signal };
const pieces = values.raw ? session.generate(prompt, options) : session.chat(prompt, options);
const start = performance.now();
let n = 0;
try {
  for await (const piece of pieces) {
    process.stdout.write(piece);
    n++;
  }
} catch (e) {
  if (!(e instanceof WvError && e.code === 'WV_ERR_CANCELLED')) throw e;
  process.stderr.write(`\n[cancelled: ${e.cause?.message ?? e.message}]`);
}
process.stderr.write(`\n[${n} pieces in ${Math.round(performance.now() - start)} ms]\n`);
session.close();
model.close();
