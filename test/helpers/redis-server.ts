import net from 'node:net';
import { freePort } from './ports.js';
import { ownedTempDir, startServerProcess, type ServerProcess } from './private-server.js';

const REDIS_BIN = '/usr/bin/redis-server';

export interface RedisServerOptions {
  /** Enable AOF with `appendfsync always`, so acknowledged writes survive kill9(). */
  appendonly?: boolean;
  /** Working dir (AOF lives here). Defaults to a fresh temp dir, removed when the test process exits. */
  dir?: string;
  /** A port to listen on (default: a free one). */
  port?: number;
  /** More `redis-server` arguments (e.g. cluster mode: test/helpers/redis-cluster.ts). */
  extraArgs?: readonly string[];
}

/** kill9, stop (graceful; nothing is saved: `--save ""`) and restart (same port and dir; ready once it answers PING). */
export interface RedisServer extends ServerProcess {
  readonly port: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  readonly dir: string;
}

/** One raw RESP PING; true only on +PONG (a loading AOF answers -LOADING, so we keep waiting). */
function ping(port: number, timeoutMs = 250): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

export async function startRedis(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const appendonly = opts.appendonly ?? false;
  const dir = opts.dir ?? (await ownedTempDir('irs-redis-'));
  const port = opts.port ?? (await freePort());

  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', appendonly ? 'yes' : 'no',
    ...(appendonly ? ['--appendfsync', 'always'] : []),
    '--dir', dir,
    '--daemonize', 'no',
    ...(opts.extraArgs ?? []),
  ];
  const server = await startServerProcess(REDIS_BIN, args, `redis-server on port ${port} to answer PING`, () => ping(port));
  return { port, url: `redis://127.0.0.1:${port}`, dir, ...server };
}
