import net from 'node:net';
import { freePort } from './ports.js';
import { ownedTempDir, startServerProcess, type ServerProcess } from './private-server.js';

const NATS_BIN = 'nats-server';

/** The machine's NATS server (JetStream on), for the test that runs against it. */
export const MACHINE_NATS_URL = 'nats://127.0.0.1:4222';

/** kill9, stop and restart (same port and store; ready once it greets a client). */
export interface NatsServer extends ServerProcess {
  readonly port: number;
  /** nats://127.0.0.1:PORT */
  readonly url: string;
  /** JetStream's store: streams survive kill9() and restart(). */
  readonly dir: string;
}

/** True once the server sends its INFO greeting to a new client. */
export function greets(port: number, timeoutMs = 250): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on('error', () => done(false));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) done(reply.startsWith('INFO '));
    });
  });
}

/** A private `nats-server -js` on a free port with its own store directory (removed when the test process exits). */
export async function startNats(): Promise<NatsServer> {
  const dir = await ownedTempDir('irs-nats-');
  const port = await freePort();
  const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir];
  const server = await startServerProcess(NATS_BIN, args, `nats-server on port ${port} to greet a client`, () => greets(port));
  return { port, url: `nats://127.0.0.1:${port}`, dir, ...server };
}
