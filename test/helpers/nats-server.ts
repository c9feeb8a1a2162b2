import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, onProcessExit } from './ports.js';
import { GiveUp, waitFor } from './wait.js';

const NATS_BIN = 'nats-server';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_CHARS = 4_000;

/** The machine's NATS server (JetStream on), for the test that runs against it. */
export const MACHINE_NATS_URL = 'nats://127.0.0.1:4222';

export interface NatsServer {
  readonly port: number;
  /** nats://127.0.0.1:PORT */
  readonly url: string;
  /** JetStream's store: streams survive kill9() and restart(). */
  readonly dir: string;
  /** SIGKILL (a crash) and wait for the process to exit. No-op if not running. */
  kill9(): Promise<void>;
  /** Start again on the same port and store (stopping first if still running); resolves once it greets a client. */
  restart(): Promise<void>;
  /** SIGTERM, wait for exit. No-op if not running. */
  stop(): Promise<void>;
}

const liveChildren = new Set<ChildProcess>();
const ownedDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  onProcessExit(() => {
    for (const child of liveChildren) child.kill('SIGKILL');
    for (const dir of ownedDirs) rmSync(dir, { recursive: true, force: true });
    ownedDirs.clear();
  });
}

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

function waitForExit(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
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
  installExitHook();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'irs-nats-'));
  ownedDirs.add(dir);
  const port = await freePort();
  const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir];
  let child: ChildProcess | undefined;

  async function launch(): Promise<void> {
    const proc = spawn(NATS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(proc);
    proc.once('exit', () => liveChildren.delete(proc));
    let output = '';
    const capture = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
    };
    proc.stdout?.on('data', capture);
    proc.stderr?.on('data', capture);
    let spawnError: Error | undefined;
    proc.once('error', (err) => (spawnError = err));
    child = proc;
    try {
      await waitFor(
        `nats-server on port ${port} to greet a client`,
        async () => {
          if (spawnError !== undefined) throw new GiveUp(`it failed to spawn: ${spawnError.message}`);
          if (!isRunning(proc)) throw new GiveUp(`it exited early (code ${String(proc.exitCode)}, signal ${String(proc.signalCode)})`);
          return (await greets(port)) ? true : undefined;
        },
        { timeoutMs: START_TIMEOUT_MS, intervalMs: 50 },
      );
    } catch (err) {
      if (isRunning(proc)) {
        proc.kill('SIGKILL');
        await waitForExit(proc);
      }
      throw new Error(`${(err as Error).message}:\n${output}`);
    }
  }

  async function kill9(): Promise<void> {
    if (child === undefined || !isRunning(child)) return;
    child.kill('SIGKILL');
    await waitForExit(child);
  }

  async function stop(): Promise<void> {
    if (child === undefined || !isRunning(child)) return;
    const proc = child;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await waitForExit(proc);
    clearTimeout(timer);
  }

  async function restart(): Promise<void> {
    await stop();
    await launch();
  }

  await launch();
  return { port, url: `nats://127.0.0.1:${port}`, dir, kill9, restart, stop };
}
