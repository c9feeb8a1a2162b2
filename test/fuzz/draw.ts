import fc from 'fast-check';

/**
 * Imperative drawing on top of fast-check's `fc.gen()`: every choice is a fast-check draw, so a run replays
 * from its seed and path, and a failing batch shrinks. Bulk filler (long strings) comes from one drawn integer
 * through a small PRNG, so a 64 KiB body costs one draw, not 65,536.
 */
/**
 * One builder per range: fast-check's `gen` caches arbitraries per builder and compares their arguments one by
 * one, which turns quadratic with thousands of distinct `{ min, max }` objects (half the run's time, measured).
 */
const builders = new Map<string, () => fc.Arbitrary<number>>();
function integers(min: number, max: number): () => fc.Arbitrary<number> {
  const key = `${min}:${max}`;
  let builder = builders.get(key);
  if (!builder) {
    const arbitrary = fc.integer({ min, max });
    builder = () => arbitrary;
    builders.set(key, builder);
  }
  return builder;
}

export class Draw {
  constructor(private readonly g: fc.GeneratorValue) {}

  int(min: number, max: number): number {
    return this.g(integers(min, max));
  }

  bool(p = 0.5): boolean {
    return this.int(0, 9_999) < p * 10_000;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(0, items.length - 1)]!;
  }

  /** One of the options, each as likely as its weight. */
  weighted<T>(options: readonly (readonly [number, T])[]): T {
    const total = options.reduce((t, [w]) => t + w, 0);
    let at = this.int(0, total - 1);
    for (const [w, v] of options) {
      if (at < w) return v;
      at -= w;
    }
    return options[options.length - 1]![1];
  }

  /** `length` characters drawn from `alphabet` (code points, so astral characters count once). */
  chars(alphabet: string, length: number): string {
    const points = [...alphabet];
    let state = this.int(0, 2 ** 31 - 1) >>> 0;
    const out = new Array<string>(length);
    for (let i = 0; i < length; i++) {
      state = (Math.imul(state, 1_103_515_245) + 12_345) >>> 0;
      out[i] = points[(state >>> 8) % points.length]!;
    }
    return out.join('');
  }

  /** `s` with `insert` placed at a drawn position. */
  insert(s: string, insert: string): string {
    const units = [...s];
    const at = this.int(0, units.length);
    return [...units.slice(0, at), insert, ...units.slice(at)].join('');
  }
}

export const ALNUM = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
/** The contract's identifier alphabet (api.md, "Identifiers and limits"). */
export const ID_ALPHABET = `${ALNUM}._:-`;
/** Visible ASCII, the Idempotency-Key alphabet. */
export const VISIBLE_ASCII = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');

/**
 * Characters by what the contract makes of them in free text (`reference`, `reason`, metadata). NUL and lone
 * surrogates cannot be stored (PostgreSQL text and jsonb refuse them): a request carrying one is invalid. Other
 * controls may be refused or kept; everything else is ordinary text that must be accepted.
 */
export const UNICODE = {
  nul: ['\u0000'],
  loneSurrogate: ['\ud800', '\udbff', '\udc00', '\udfff'],
  otherControl: ['\u0001', '\u0007', '\u0008', '\t', '\n', '\r', '\u001b', '\u001f', '\u007f', '\u0080', '\u0085', '\u009b', '\u009f'],
  bidi: ['\u202e', '\u202d', '\u2066', '\u2069', '\u200f', '\u061c'],
  zeroWidth: ['\u200b', '\u200c', '\u200d', '\u2060', '\ufeff'],
  astral: ['😀', '𝔘', '🏳️‍🌈', '\u{10fffd}', '𠜎', '👩🏽‍💻'],
  other: ['é', 'ß', '中文', 'ﷺ', 'e\u0301', 'İ', '\ufffd', 'Ω', 'ǅ'],
};

/** Ordinary text: what must be accepted wherever the contract allows free text. */
export const FINE_TEXT = [...UNICODE.bidi, ...UNICODE.zeroWidth, ...UNICODE.astral, ...UNICODE.other];

/** Characters outside the identifier alphabet (each makes an identifier invalid). */
export const NOT_ID = [' ', '/', '%', '@', '#', '?', '+', '~', ',', '*', '"', "'", '\\', '<', '&', '=', ';', '!', '$',
  ...UNICODE.nul, ...UNICODE.otherControl, ...FINE_TEXT, ...UNICODE.loneSurrogate];

/** Percent-encodes every byte outside the unreserved set; lone surrogates become U+FFFD's bytes (UTF-8 has none). */
export function pct(s: string): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9._~:-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
