/**
 * A JSON document as the fuzzer builds it: objects are entry lists (so `__proto__` is an ordinary key and a key
 * may repeat), and a value may be a raw token (`1e400`, `-0`) or raw bytes (invalid UTF-8, an unescaped control
 * byte) that no JavaScript value serialises to.
 */
export class Obj {
  constructor(readonly entries: [string, JVal][] = []) {}

  get(key: string): JVal | undefined {
    for (let i = this.entries.length - 1; i >= 0; i--) if (this.entries[i]![0] === key) return this.entries[i]![1];
    return undefined;
  }

  /** Replaces the key's last value in place (its position stays), or appends it. */
  set(key: string, value: JVal): Obj {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      if (this.entries[i]![0] === key) {
        this.entries[i] = [key, value];
        return this;
      }
    }
    this.entries.push([key, value]);
    return this;
  }

  delete(key: string): Obj {
    const kept = this.entries.filter(([k]) => k !== key);
    this.entries.splice(0, this.entries.length, ...kept);
    return this;
  }
}

/** A token written as is (a number JavaScript cannot hold, or a deliberately broken fragment). */
export class Raw {
  constructor(readonly bytes: Buffer) {}
  static text(text: string): Raw {
    return new Raw(Buffer.from(text, 'utf8'));
  }
}

export type JVal = null | boolean | number | string | JVal[] | Obj | Raw;

export const obj = (record: Record<string, JVal>): Obj => new Obj(Object.entries(record));

/** A deep copy (entries and arrays are fresh; raw tokens are immutable). */
export function clone(v: JVal): JVal {
  if (Array.isArray(v)) return v.map(clone);
  if (v instanceof Obj) return new Obj(v.entries.map(([k, x]) => [k, clone(x)]));
  return v;
}

/** The document's bytes. Strings go through JSON.stringify, which escapes NUL and lone surrogates as \uXXXX. */
export function encode(v: JVal): Buffer {
  const parts: Buffer[] = [];
  const write = (x: JVal): void => {
    if (x instanceof Raw) parts.push(x.bytes);
    else if (x instanceof Obj) {
      parts.push(Buffer.from('{'));
      x.entries.forEach(([k, val], i) => {
        parts.push(Buffer.from(`${i ? ',' : ''}${JSON.stringify(k)}:`, 'utf8'));
        write(val);
      });
      parts.push(Buffer.from('}'));
    } else if (Array.isArray(x)) {
      parts.push(Buffer.from('['));
      x.forEach((val, i) => {
        if (i) parts.push(Buffer.from(','));
        write(val);
      });
      parts.push(Buffer.from(']'));
    } else parts.push(Buffer.from(JSON.stringify(x), 'utf8'));
  };
  write(v);
  return Buffer.concat(parts);
}

/** Nested arrays (`[[[…]]]`) or objects (`{"a":{"a":…}}`) `depth` levels deep, as one raw token. */
export function deep(kind: 'array' | 'object', depth: number): Raw {
  return kind === 'array'
    ? Raw.text('['.repeat(depth) + ']'.repeat(depth))
    : Raw.text('{"a":'.repeat(depth) + '1' + '}'.repeat(depth));
}
