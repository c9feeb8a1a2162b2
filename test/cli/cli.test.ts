import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HELP, integerFlag, parseCommandLine } from '../../src/cli/args.js';

// Every command-line tool answers --help with its usage (exit 0), and a bad command line with one line on stderr
// and exit 2: never a stack trace, and nothing started (each parses its flags before connecting anywhere).

const root = fileURLToPath(new URL('../..', import.meta.url));
const tsx = `${root}node_modules/.bin/tsx`;

const run = (file: string, args: string[]) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(tsx, [file, ...args], { cwd: root, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr }),
    );
  });

const tools: [file: string, usage: RegExp][] = [
  ['src/cli/reconcile.ts', /^npm run reconcile -- /],
  ['test/drills/run.ts', /^npm run drill -- /],
  ['bench/run.ts', /^npm run bench -- /],
  ['bench/wrk/run.ts', /^npm run bench:wrk -- /],
  ['bench/rebuild.ts', /^npm run bench:rebuild -- /],
  ['bench/server.ts', /^npx tsx bench\/server\.ts /],
];

describe('command-line tools', () => {
  for (const [file, usage] of tools) {
    it(`${file}: --help prints the usage; an unknown flag is one line and exit 2`, { timeout: 120_000 }, async () => {
      const help = await run(file, ['--help']);
      expect(help).toMatchObject({ code: 0, stderr: '' });
      expect(help.stdout).toMatch(usage);
      expect(help.stdout).toMatch(/--help/);
      const unknown = await run(file, ['--no-such-flag']);
      expect(unknown).toEqual({ code: 2, stdout: '', stderr: "Unknown option '--no-such-flag' (--help lists the options)\n" });
    });
  }
});

describe('parseCommandLine and integerFlag', () => {
  const exits: number[] = [];
  const errors: string[] = [];
  const printed: string[] = [];
  /** The command line `args` as a tool parses it; exit, stderr and stdout are recorded instead of happening. */
  const parse = (args: string[]) => {
    vi.spyOn(process, 'exit').mockImplementation((code) => {
      exits.push(Number(code));
      throw new Error('exit');
    });
    vi.spyOn(console, 'error').mockImplementation((line: string) => void errors.push(line));
    vi.spyOn(console, 'log').mockImplementation((line: string) => void printed.push(line));
    try {
      const values = parseCommandLine('usage: tool [--seconds S] [--fast]', () =>
        parseArgs({ args, options: { seconds: { type: 'string' }, fast: { type: 'boolean', default: false }, help: HELP } }),
      );
      return { ...values, seconds: integerFlag('seconds', values.seconds, 15, 3) };
    } catch (err) {
      if ((err as Error).message === 'exit') return null;
      throw err;
    }
  };
  afterEach(() => {
    vi.restoreAllMocks();
    exits.length = errors.length = printed.length = 0;
  });

  it('returns the values, with defaults', () => {
    expect(parse([])).toEqual({ fast: false, seconds: 15 });
    expect(parse(['--fast', '--seconds', '20'])).toEqual({ fast: true, seconds: 20 });
    expect(exits).toEqual([]);
  });

  it('--help and -h print the usage and exit 0', () => {
    expect(parse(['--help'])).toBeNull();
    expect(parse(['-h'])).toBeNull();
    expect({ exits, printed, errors }).toEqual({ exits: [0, 0], printed: ['usage: tool [--seconds S] [--fast]', 'usage: tool [--seconds S] [--fast]'], errors: [] });
  });

  it.each([
    [['--fats'], "Unknown option '--fats'"],
    [['stray'], "Unexpected argument 'stray'"],
    [['--seconds'], "Option '--seconds <value>' argument missing"],
    [['--fast=yes'], "Option '--fast' does not take an argument"],
    [['--seconds', '2'], '--seconds needs an integer of at least 3 (got "2")'],
    [['--seconds', '3.5'], '--seconds needs an integer of at least 3 (got "3.5")'],
    [['--seconds', ''], '--seconds needs an integer of at least 3 (got "")'],
  ])('%j is one line on stderr and exit 2', (args, message) => {
    expect(parse(args)).toBeNull();
    expect({ exits, errors, printed }).toEqual({ exits: [2], errors: [`${message} (--help lists the options)`], printed: [] });
  });
});
