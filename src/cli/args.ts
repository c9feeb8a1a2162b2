// The command line of every tool (`npm run reconcile`, `npm run drill`, `npm run bench`, …): `--help` prints the
// usage, and a flag the tool does not know, one missing its value, or a stray argument is one line on stderr and
// exit 2 (the convention for a usage error), never a stack trace.

/** The `--help` option every tool declares beside its own, for node:util's parseArgs. */
export const HELP = { type: 'boolean', short: 'h' } as const;

/** Prints `message` as the tool's one-line usage error and exits 2. */
export function usageError(message: string): never {
  console.error(`${message} (--help lists the options)`);
  process.exit(2);
}

/**
 * Runs `parse` (node:util's parseArgs with the tool's options and `help: HELP`; strict by default: no unknown flag,
 * no stray argument): on `--help` prints `usage` and exits 0; on a bad command line, a usage error.
 */
export function parseCommandLine<T extends { values: { help?: boolean | undefined } }>(usage: string, parse: () => T): T['values'] {
  let parsed: T;
  try {
    parsed = parse();
  } catch (err) {
    // Node's message, first sentence: "Unknown option '--hep'", "Option '--seconds <value>' argument missing".
    usageError(String((err as Error).message).split('. ')[0]!);
  }
  if (parsed.values.help) {
    console.log(usage.trimEnd());
    process.exit(0);
  }
  return parsed.values;
}

/** `value` of `--flag` as an integer of at least `min`, `fallback` when absent; anything else is a usage error. */
export function integerFlag(flag: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isSafeInteger(n) || n < min) {
    usageError(`--${flag} needs an integer of at least ${min} (got "${value}")`);
  }
  return n;
}
