// The binding from TypeScript (type-checked by `npm run typecheck`, not run).
import { load, WvError, Status, type GenerateOptions, type Model, type Session } from 'wv';

export async function reply(dir: string, message: string, signal?: AbortSignal): Promise<string> {
  const model: Model = await load(dir, { device: 'cpu', onProgress: (f: number) => void f });
  const session: Session = model.session({ contextLength: 512, systemPrompt: null });
  const options: GenerateOptions = { temperature: 0, maxTokens: 64, stop: ['USER:'], signal };
  let text = '';
  try {
    for await (const piece of session.chat(message, options)) text += piece;
  } catch (e) {
    if (e instanceof WvError && e.code === 'WV_ERR_CANCELLED' && e.status === Status.CANCELLED) return text;
    throw e;
  } finally {
    session.close();
    model.close();
  }
  const n: number = session.closed ? 0 : session.tokenCount;
  return text + n;
}
