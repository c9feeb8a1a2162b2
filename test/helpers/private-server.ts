import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { onProcessExit } from './ports.js';
import { GiveUp, waitFor } from './wait.js';

// A server process a test starts, crashes and restarts itself (redis-server.ts, nats-server.ts): the lifecycle they
// share. Each says how to run its binary and how to tell it is ready.

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_CHARS = 4_000;

export interface ServerProcess {
  /** SIGKILL (a crash, no shutdown hooks) and wait for the process to exit. No-op if not running. */
  kill9(): Promise<void>;
  /** SIGTERM, wait for exit (SIGKILL if it hangs). No-op if not running. */
  stop(): Promise<void>;
  /** Start again with the same arguments (stopping first if still running); resolves once it is ready. */
  restart(): Promise<void>;
}

// Children and temp dirs still alive when the test process ends (cleanup must be synchronous).
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

/** A fresh temp dir, removed when the test process exits. */
export async function ownedTempDir(prefix: string): Promise<string> {
  installExitHook();
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  ownedDirs.add(dir);
  return dir;
}

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

function waitForExit(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Spawns `bin args` and resolves once `ready()` says so (`readiness` names what is awaited, for the error); a server
 * that fails to spawn, exits early or is not ready in time is killed, and the error carries the tail of its output.
 */
export async function startServerProcess(bin: string, args: readonly string[], readiness: string, ready: () => Promise<boolean>): Promise<ServerProcess> {
  installExitHook();
  let child: ChildProcess | undefined;

  async function launch(): Promise<void> {
    const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(proc);
    proc.once('exit', () => liveChildren.delete(proc));
    // Keep a tail of both streams for the error message.
    let output = '';
    const capture = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
    };
    proc.stdout?.on('data', capture);
    proc.stderr?.on('data', capture);
    let spawnError: Error | undefined;
    proc.once('error', (err) => {
      spawnError = err;
    });
    child = proc;

    try {
      await waitFor(
        readiness,
        async () => {
          if (spawnError !== undefined) throw new GiveUp(`it failed to spawn: ${spawnError.message}`);
          if (!isRunning(proc)) throw new GiveUp(`it exited early (code ${String(proc.exitCode)}, signal ${String(proc.signalCode)})`);
          return (await ready()) ? true : undefined;
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
    // A wedged server must not hang the suite: escalate to SIGKILL.
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await waitForExit(proc);
    clearTimeout(timer);
  }

  async function restart(): Promise<void> {
    await stop();
    await launch();
  }

  await launch();
  return { kill9, stop, restart };
}
