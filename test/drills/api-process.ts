import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { onProcessExit } from '../helpers/ports.js';
import { GiveUp, waitFor } from '../helpers/wait.js';
import { HttpClient } from './http-client.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const STOP_TIMEOUT_MS = 5_000;

// API processes still alive when the drill process ends are killed synchronously (Vitest stops workers with SIGTERM).
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    onProcessExit(() => {
      for (const c of liveChildren) c.kill('SIGKILL');
    });
  }
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
}

const isRunning = (child: ChildProcess | null): boolean =>
  child !== null && child.exitCode === null && child.signalCode === null;

/**
 * One real API process (`node --import tsx src/server.ts`), as production runs it: configuration from the
 * environment, its own PostgreSQL pool and Redis connection. Output goes to a log file the drill prints on failure.
 */
export class ApiProcess {
  private child: ChildProcess | null = null;
  private readonly probe = new HttpClient(1_000);
  /** The drill wants this process up: an exit while wanted is a crash, not the drill's doing. */
  private wanted = false;
  private starting: Promise<void> | null = null;
  /** Exits the drill did not cause of a process that had been serving, with the reason from its own log. */
  readonly crashes: string[] = [];
  /**
   * Restarts that gave up before serving (server.ts exits by design when PostgreSQL cannot be reached at start,
   * and the supervisor tries again): observations, not crashes.
   */
  readonly failedStarts: string[] = [];

  constructor(
    readonly name: string,
    readonly port: number,
    private readonly env: Record<string, string>,
    readonly logFile: string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return isRunning(this.child);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the process and resolves once /health/ready answers 200. */
  start(timeoutMs = 30_000): Promise<void> {
    this.starting ??= this.spawn(timeoutMs).finally(() => (this.starting = null));
    return this.starting;
  }

  /** A supervisor's job (systemd Restart=always, a Kubernetes restart): restart a process that crashed. */
  async restartIfCrashed(): Promise<boolean> {
    if (!this.wanted || this.running || this.starting) return false;
    await this.start();
    return true;
  }

  private async spawn(timeoutMs: number): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    this.wanted = true;
    const logOffset = existsSync(this.logFile) ? statSync(this.logFile).size : 0;
    const fd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
        cwd: REPO_ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...this.env, HOST: '127.0.0.1', PORT: String(this.port) },
        stdio: ['ignore', fd, fd],
      });
    } finally {
      closeSync(fd);
    }
    track(child);
    this.child = child;
    const startedAt = Date.now();
    let served = false;
    child.once('exit', (code, signal) => {
      if (!this.wanted || this.child !== child) return;
      const what =
        `${this.name} (pid ${String(child.pid)}) exited on its own at ${new Date().toISOString()} ` +
        `(${Date.now() - startedAt} ms after start, code ${String(code)}, signal ${String(signal)}): ${crashReason(this.logSince(logOffset))}`;
      (served ? this.crashes : this.failedStarts).push(what);
    });
    await this.waitReady(timeoutMs);
    served = true;
  }

  /**
   * Resolves once /health/ready answers 200; fails at once if the process exits meanwhile, or after `timeoutMs`,
   * with the tail of its log. The one wait for a real process to serve (drills and tests that spawn one).
   */
  async waitReady(timeoutMs: number): Promise<void> {
    const child = this.child;
    try {
      await waitFor(
        `${this.name} to report ready`,
        async () => {
          if (!isRunning(child)) throw new GiveUp(`it exited (code ${String(child?.exitCode)}, signal ${String(child?.signalCode)})`);
          return (await this.ready()) ? true : undefined;
        },
        { timeoutMs, intervalMs: 50 },
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}:\n${this.tail()}`);
    }
  }

  /** True when /health/ready answers 200 right now. */
  async ready(): Promise<boolean> {
    try {
      return (await this.probe.request(this.url, 'GET', '/health/ready')).status === 200;
    } catch {
      return false;
    }
  }

  /** SIGKILL: no graceful shutdown, in-flight requests die between decision and record. */
  async kill9(): Promise<void> {
    this.wanted = false;
    await this.starting?.catch(() => undefined);
    const child = this.child;
    if (child === null || !isRunning(child)) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.probe.close();
  }

  /**
   * SIGTERM (graceful close), escalating to SIGKILL after STOP_TIMEOUT_MS; resolves with how the process exited
   * (null if it was not running).
   */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null } | null> {
    this.wanted = false;
    await this.starting?.catch(() => undefined);
    const child = this.child;
    if (child === null || !isRunning(child)) return null;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const exit = await exited;
    clearTimeout(timer);
    this.probe.close();
    return exit;
  }

  private logSince(offset: number): string {
    try {
      return readFileSync(this.logFile).subarray(offset).toString('utf8');
    } catch {
      return '';
    }
  }

  tail(chars = 3_000): string {
    try {
      const text = readFileSync(this.logFile, 'utf8');
      return text.slice(-chars);
    } catch {
      return '(no log)';
    }
  }
}

/**
 * Why a server died, from its log: close-with-grace's "shutting down after an error" line (the uncaught error
 * that started the shutdown), Node's own report of an unhandled 'error' event, or the last lines.
 */
function crashReason(log: string): string {
  const lines = log.split('\n').filter(Boolean);
  for (const line of lines) {
    if (!line.startsWith('{') || !line.includes('shutting down after an error')) continue;
    try {
      const entry = JSON.parse(line) as { err?: { type?: string; message?: string; stack?: string } };
      const frames = (entry.err?.stack ?? '').split('\n').filter((l) => l.trim().startsWith('at ')).slice(0, 2).map((l) => l.trim());
      const second = lines.includes('second error, exiting') ? ' (a second error during the graceful close then exited the process)' : '';
      return `uncaught ${entry.err?.type ?? 'Error'} "${entry.err?.message ?? '?'}" ${frames.join(' ')}${second}`;
    } catch {
      continue;
    }
  }
  const unhandled = lines.findIndex((l) => l.includes("Unhandled 'error' event") || l === 'second error, exiting');
  if (unhandled >= 0) return lines.slice(unhandled, unhandled + 3).join(' | ');
  return lines.slice(-3).join(' | ') || '(empty log)';
}
