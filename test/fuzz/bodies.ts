import { ALNUM, ID_ALPHABET, NOT_ID, UNICODE, type Draw } from './draw.js';
import { Obj, Raw, deep, obj, type JVal } from './json.js';
import type { BodyKind } from './routes.js';

/**
 * The request bodies' fields and limits (api.md, "Identifiers and limits"), as the fuzzer needs them: for each
 * kind of field, values that break it for certain. Valid `priority`, `safetyStock` and `allocation` values are
 * drawn by routes.ts, so a base body may carry them.
 */
export type Spec =
  | { kind: 'int'; min: number; max: number; nonZero?: boolean }
  | { kind: 'id'; max: number }
  | { kind: 'text'; max: number }
  | { kind: 'bool' }
  | { kind: 'metadata' }
  | { kind: 'lines' }
  | { kind: 'enum' }
  | { kind: 'allocation' };

export interface BodySpec {
  fields: Record<string, Spec>;
  required: string[];
  /** Fields a valid base body may carry (the rest only ever appear with a wrong value). */
  implemented: string[];
}

export const LINE_FIELDS: Record<string, Spec> = {
  itemId: { kind: 'id', max: 128 },
  location: { kind: 'id', max: 64 },
  quantity: { kind: 'int', min: 1, max: 1_000_000 },
};

export const BODIES: Record<Exclude<BodyKind, 'none'>, BodySpec> = {
  reserve: {
    fields: {
      lines: { kind: 'lines' },
      ttlSeconds: { kind: 'int', min: 1, max: 86_400 },
      reference: { kind: 'text', max: 255 },
      metadata: { kind: 'metadata' },
      priority: { kind: 'enum' },
      allocation: { kind: 'allocation' },
    },
    required: ['lines'],
    implemented: ['lines', 'ttlSeconds', 'reference', 'metadata', 'priority', 'allocation'],
  },
  stockSet: {
    fields: { quantity: { kind: 'int', min: 0, max: 1_000_000_000 }, location: { kind: 'id', max: 64 }, safetyStock: { kind: 'int', min: 0, max: 1_000_000_000 } },
    required: ['quantity'],
    implemented: ['quantity', 'location', 'safetyStock'],
  },
  adjust: {
    fields: {
      delta: { kind: 'int', min: -1_000_000_000, max: 1_000_000_000, nonZero: true },
      location: { kind: 'id', max: 64 },
      reason: { kind: 'text', max: 255 },
    },
    required: ['delta'],
    implemented: ['delta', 'location', 'reason'],
  },
  admin: { fields: { repair: { kind: 'bool' } }, required: [], implemented: ['repair'] },
  releaseByReference: { fields: { reference: { kind: 'text', max: 255 } }, required: ['reference'], implemented: ['reference'] },
  extend: { fields: { ttlSeconds: { kind: 'int', min: 1, max: 86_400 } }, required: ['ttlSeconds'], implemented: ['ttlSeconds'] },
};

/** A value that breaks a field, what kind of break it is, and the field path the answer should name. */
export interface Bad {
  value: JVal;
  label: string;
  /** Path below the field (`''` the field itself, `.k`, `[3]`); null: the answer may name only `body`. */
  suffix: string | null;
}

const deepValue = (d: Draw): Raw => (d.bool() ? deep('array', d.pick([1000, 2500, 20_000])) : deep('object', d.pick([1000, 2500, 8000])));

/** Values of every JSON type but `keep`'s. */
function wrongType(d: Draw, keep: 'number' | 'string' | 'boolean' | 'object' | 'array', sample: JVal): Bad {
  const options: [string, JVal][] = [
    ['number', d.pick([0, 1, -1, 1.5])],
    ['string', d.pick(['', '1', 'true', JSON.stringify(sample ?? null)])],
    ['boolean', d.bool()],
    ['null', null],
    ['array', d.pick([[], [sample], [[]]])],
    ['object', d.pick([new Obj(), obj({ value: sample })])],
    ['deep', deepValue(d)],
  ];
  const [label, value] = d.pick(options.filter(([k]) => k !== keep));
  return { value, label: `type.${label}`, suffix: '' };
}

/** Numbers as JSON text, including ones JavaScript cannot hold; those outside the field's rule. */
function badInteger(d: Draw, s: { min: number; max: number; nonZero?: boolean }): Bad {
  if (d.bool(0.3)) return wrongType(d, 'number', s.min);
  if (d.bool(0.1)) return { value: Raw.text(d.pick(['+1', '01', '.5', '1.', 'NaN', 'Infinity', '-Infinity', '0x10', '1e', '--1', '1_000'])), label: 'number.not-json', suffix: null };
  const candidates = [
    '0', '-1', '-0', '0.0', `${s.min - 1}`, `${s.max + 1}`, `${s.max}0`, '1e308', '-1e308', '1e400', '-1e400',
    '9007199254740993', '-9007199254740993', '18446744073709551616', '1.5', '0.5', '-0.5', `${s.max}.5`,
    `${s.min}.000001`, '1e-7', '5e-324', `${s.max + 1}e0`, `${s.max}E1`, '1E10', '2e9', '-2e9', '1.7976931348623157e308',
  ];
  const invalid = candidates.filter((t) => {
    const v = JSON.parse(t) as number;
    return !Number.isInteger(v) || v < s.min || v > s.max || (s.nonZero === true && v === 0);
  });
  const text = d.pick(invalid);
  return { value: Raw.text(text), label: `number.${/[.]|e-/i.test(text) ? 'fraction' : 'range'}`, suffix: '' };
}

function badId(d: Draw, max: number): Bad {
  const valid = d.chars(ID_ALPHABET, d.int(1, Math.min(20, max)));
  return d.weighted<() => Bad>([
    [2, () => wrongType(d, 'string', valid)],
    [1, () => ({ value: '', label: 'string.empty', suffix: '' })],
    [2, () => ({ value: d.chars(ID_ALPHABET, d.pick([max + 1, max + d.int(2, 500)])), label: 'string.over-limit', suffix: '' })],
    [4, () => ({ value: d.insert(valid, d.pick(NOT_ID)), label: 'id.alphabet', suffix: '' })],
    [1, () => ({ value: d.insert(valid, '\u0000'), label: 'text.nul', suffix: '' })],
    [1, () => ({ value: d.insert(valid, d.pick(UNICODE.loneSurrogate)), label: 'text.lone-surrogate', suffix: '' })],
    [1, () => ({ value: d.pick(['.', '..']), label: 'id.dots', suffix: '' })],
  ])();
}

/** Free text: only NUL, lone surrogates, an empty string and length break it for certain. */
function badText(d: Draw, max: number, allowEmpty = false): Bad {
  const valid = d.chars(ALNUM + ' ', d.int(1, 20));
  return d.weighted<() => Bad>([
    [2, () => wrongType(d, 'string', valid)],
    [allowEmpty ? 0 : 1, () => ({ value: '', label: 'string.empty', suffix: '' })],
    [2, () => ({ value: d.chars(ALNUM, d.pick([max + 1, max + d.int(2, 3000)])), label: 'string.over-limit', suffix: '' })],
    [3, () => ({ value: d.insert(valid, d.pick(['\u0000', `a\u0000`, '\u0000\u0000'])), label: 'text.nul', suffix: '' })],
    [3, () => ({ value: d.insert(valid, d.pick(UNICODE.loneSurrogate)), label: 'text.lone-surrogate', suffix: '' })],
  ])();
}

const metaKey = (d: Draw) => `k${d.chars(ALNUM, d.int(0, 10))}`;

function badMetadata(d: Draw): Bad {
  const base = () => new Obj(Array.from({ length: d.int(0, 3) }, () => [metaKey(d), 'v'] as [string, JVal]));
  return d.weighted<() => Bad>([
    [2, () => wrongType(d, 'object', 'x')],
    // Weighted so that a 10,000-request run draws it about 15 times: the run fails if a required class never came.
    [7, () => ({ value: new Obj(Array.from({ length: d.int(21, 40) }, (_, i) => [`k${i}`, 'v'] as [string, JVal])), label: 'metadata.too-many-keys', suffix: '' })],
    [1, () => ({ value: base().set('', 'v'), label: 'metadata.key-empty', suffix: '' })],
    [1, () => ({ value: base().set(d.chars(ALNUM, d.int(65, 200)), 'v'), label: 'metadata.key-over-limit', suffix: '' })],
    [1, () => ({ value: base().set(d.insert(metaKey(d), '\u0000'), 'v'), label: 'metadata.key-nul', suffix: '' })],
    [1, () => ({ value: base().set(d.insert(metaKey(d), d.pick(UNICODE.loneSurrogate)), 'v'), label: 'metadata.key-lone-surrogate', suffix: '' })],
    [8, () => {
      const key = metaKey(d);
      const bad = badText(d, 500, true);
      return { value: base().set(key, bad.value), label: `metadata.value-${bad.label}`, suffix: `.${key}` };
    }],
  ])();
}

function badLines(d: Draw, current: JVal[]): Bad {
  const line = () => obj({ itemId: `fz-${d.chars(ID_ALPHABET, 8)}`, quantity: 1 });
  return d.weighted<() => Bad>([
    [2, () => wrongType(d, 'array', line())],
    [4, () => ({ value: [], label: 'lines.empty', suffix: '' })],
    [4, () => ({ value: Array.from({ length: d.int(101, 150) }, (_, i) => obj({ itemId: `fz-many-${i}`, quantity: 1 })), label: 'lines.over-limit', suffix: '' })],
    [2, () => {
      const ls = [...current];
      const at = d.int(0, ls.length);
      ls.splice(at, 0, d.pick<JVal>([null, 1, 'x', [], deepValue(d), obj({})]));
      return { value: ls, label: 'lines.element', suffix: `[${at}]` };
    }],
  ])();
}

const STRATEGIES = ['ordered', 'most_available', 'single_location'];
const someLocation = (d: Draw) => d.pick(['default', 'wh-a', 'wh-b', 'wh-c', `fz-w${d.chars(ALNUM, d.int(1, 8))}`]);

/**
 * An allocation that breaks one rule of api.md's "Allocation across locations" for certain: the schema's (types,
 * the strategy, 1–32 distinct locations, unknown keys) and the service's (locations required for ordered and
 * single_location; split with single_location).
 */
function badAllocation(d: Draw): Bad {
  const strategy = d.pick(STRATEGIES);
  const locations = (n: number) => Array.from({ length: n }, (_, i) => `wh-${i}-${d.chars(ALNUM, d.int(0, 4))}`);
  const valid = () => obj({ strategy, locations: locations(d.int(1, 3)) });
  return d.weighted<() => Bad>([
    [2, () => wrongType(d, 'object', valid())],
    [1, () => ({ value: obj({ locations: locations(1) }), label: 'allocation.strategy-missing', suffix: '.strategy' })],
    [2, () => ({
      value: obj({ strategy: d.pick<JVal>(['nearest', 'ORDERED', 'most-available', '', 'ordered\u0000', 1, null, ['ordered']]), locations: locations(1) }),
      label: 'allocation.strategy-unknown',
      suffix: '.strategy',
    })],
    [2, () => ({ value: obj({ strategy, locations: [] }), label: 'allocation.locations-empty', suffix: '.locations' })],
    [2, () => ({ value: obj({ strategy, locations: locations(d.int(33, 40)) }), label: 'allocation.locations-over-limit', suffix: '.locations' })],
    [2, () => {
      const ls = locations(d.int(1, 5));
      ls.splice(d.int(0, ls.length), 0, d.pick(ls));
      return { value: obj({ strategy, locations: ls }), label: 'allocation.locations-duplicate', suffix: '.locations' };
    }],
    [2, () => {
      const ls: JVal[] = locations(d.int(1, 3));
      const at = d.int(0, ls.length);
      const bad = badId(d, 64);
      ls.splice(at, 0, bad.value);
      return { value: obj({ strategy, locations: ls }), label: bad.label, suffix: bad.suffix === null ? null : `.locations[${at}]` };
    }],
    [2, () => ({
      value: obj({ strategy: d.pick(['ordered', 'single_location']), ...(d.bool() ? { split: d.bool() } : {}) }),
      label: 'allocation.locations-required',
      suffix: '.locations',
    })],
    [2, () => ({
      value: obj({ strategy: 'single_location', locations: [someLocation(d)], split: true }),
      label: 'allocation.split-with-single-location',
      suffix: '.split',
    })],
    [1, () => ({ value: valid().set('split', d.pick<JVal>(['true', 1, 0, null, []])), label: 'allocation.split-type', suffix: '.split' })],
    [1, () => {
      const key = d.pick(['priority', 'location', 'strategies', 'Split', 'constructor']);
      return { value: valid().set(key, d.pick<JVal>([1, 'x', true])), label: 'allocation.unknown-field', suffix: `.${key}` };
    }],
  ])();
}

export function badValue(d: Draw, spec: Spec, current: JVal | undefined): Bad {
  switch (spec.kind) {
    case 'int':
      return badInteger(d, spec);
    case 'id':
      return badId(d, spec.max);
    case 'text':
      return badText(d, spec.max);
    case 'bool':
      return d.bool(0.3) ? { value: d.pick(['true', 'false', 'yes']), label: 'type.string', suffix: '' } : wrongType(d, 'boolean', true);
    case 'metadata':
      return badMetadata(d);
    case 'lines':
      return badLines(d, Array.isArray(current) ? current : []);
    case 'enum':
      return d.bool(0.5) ? { value: d.pick(['urgent', 'HIGH', 'Normal', '', 'high\u0000']), label: 'enum.value', suffix: '' } : wrongType(d, 'string', 'normal');
    case 'allocation':
      return badAllocation(d);
  }
}

/** Keys that are not fields of any body: typos, prototype names, oddities. Identifier-shaped ones are named back. */
export const UNKNOWN_KEYS = ['foo', 'Lines', 'qty', 'sku', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'isAdmin'];
export const ODD_UNKNOWN_KEYS = ['', ' ', 'quantity ', 'lines\u0000', 'ﬁeld', 'quantіty', 'x'.repeat(300), '\ud800', '$ref', 'a.b', '0'];
