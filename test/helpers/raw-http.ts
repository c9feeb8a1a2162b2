import type { FastifyInstance } from 'fastify';
import net from 'node:net';
import { parseJson, type Answer } from './api.js';

/**
 * Raw HTTP/1.1 over a real socket, for what `app.inject` cannot show: inject bypasses Node's parser (the bytes it
 * refuses) and normalises the URL (`/items/%2e%2e/…` arrives as `/…`).
 */

/** An answer read off the socket, shaped like the client's so the usual assertions apply, and how it ended. */
export interface RawResponse extends Answer {
  statusLine: string;
  /** The server closed the connection after answering. */
  closed: boolean;
}

/** Starts `app` on a free 127.0.0.1 port and returns the port. */
export async function listenLocal(app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return (app.server.address() as net.AddressInfo).port;
}

/** How long an exchange waits for the server to close before reporting it left open. */
const CLOSE_DEADLINE_MS = 5_000;

/**
 * Sends `bytes` (a string is sent as latin1: one byte per char, so any byte can be written) and reads until the
 * server closes the connection or the deadline passes (then `closed` is false); returns every answer read.
 */
export function exchangeAll(
  port: number,
  bytes: string | Buffer,
  options: { endAfterWrite?: boolean; head?: boolean } = {},
): Promise<RawResponse[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const finish = (closed: boolean) => {
      clearTimeout(deadline);
      socket.destroy();
      try {
        resolve(parseAll(Buffer.concat(chunks).toString('latin1'), closed, options.head ?? false));
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    };
    const deadline = setTimeout(() => finish(false), CLOSE_DEADLINE_MS);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('end', () => finish(true));
    socket.on('error', () => finish(true));
    socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
    if (options.endAfterWrite) socket.end();
  });
}

/** `exchangeAll` for a request that gets exactly one answer. */
export async function exchange(
  port: number,
  bytes: string | Buffer,
  options: { endAfterWrite?: boolean; head?: boolean } = {},
): Promise<RawResponse> {
  const answers = await exchangeAll(port, bytes, options);
  if (answers.length !== 1) throw new Error(`${answers.length} answers: ${answers.map((a) => a.statusLine).join(', ')}`);
  return answers[0]!;
}

/** The answers in `text`, each checked for a well-formed length (no body after HEAD); a `100 Continue` is skipped. */
function parseAll(text: string, closed: boolean, head: boolean): RawResponse[] {
  const answers: RawResponse[] = [];
  while (text.length > 0) {
    const headEnd = text.indexOf('\r\n\r\n');
    if (headEnd < 0) throw new Error(`incomplete answer (closed: ${closed}): ${JSON.stringify(text.slice(0, 200))}`);
    const [statusLine = '', ...lines] = text.slice(0, headEnd).split('\r\n');
    text = text.slice(headEnd + 4);
    if (statusLine.startsWith('HTTP/1.1 100 ')) continue;
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers['content-length']);
    if (!Number.isInteger(length)) throw new Error(`no Content-Length: ${statusLine}`);
    const bodyLength = head ? 0 : length;
    if (Buffer.byteLength(text, 'latin1') < bodyLength) throw new Error(`body shorter than Content-Length: ${statusLine}`);
    const body = Buffer.from(text.slice(0, bodyLength), 'latin1').toString('utf8');
    text = text.slice(bodyLength);
    answers.push({ statusLine, closed, status: Number(statusLine.split(' ')[1]), headers, body: parseJson(body), text: body });
  }
  return answers;
}
