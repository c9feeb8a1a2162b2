import { DEFAULT_TENANT, type Role } from './domain/tenancy.js';

/**
 * The `API_KEYS` format, `name:secret:role[:tenant]` comma-separated: the one place it is defined. The config
 * check (src/config.ts) refuses a bad value at start; the HTTP layer (src/http/access.ts) reads the keys.
 * Secrets contain neither `:` nor `,`, so every entry splits one way only.
 */

export interface ApiKey {
  name: string;
  secret: string;
  role: Role;
  /** Whose reservations a client key sees; keys without one share `default`. */
  tenant: string;
}

const NAME = /^[A-Za-z0-9_.-]+$/;
/** 16+ visible ASCII characters other than `:` and `,`. */
const SECRET = /^[\x21-\x2B\x2D-\x39\x3B-\x7E]{16,}$/;
const ROLE = /^(client|operator)$/;
const TENANT = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * The keys, or every problem with them. A problem never quotes a secret: a malformed entry is named by its
 * position only (its "name" might be a misplaced secret); the names of well-formed entries are safe to show.
 * A repeated name is refused (which key would it be?), and so is a secret under two names (the last would win,
 * turning one caller into another, a client into an operator).
 */
export function parseApiKeys(value: string): { keys: ApiKey[]; problems: string[] } {
  const keys: ApiKey[] = [];
  const positions: number[] = [];
  const problems: string[] = [];
  value.split(',').forEach((entry, i) => {
    if (entry === '') return; // `a,b,` and an empty value name no key
    const at = `API_KEYS entry ${i + 1}`;
    const parts = entry.split(':');
    if (parts.length < 3 || parts.length > 4) {
      problems.push(`${at}: expected name:secret:role[:tenant] (a secret may not contain ':' or ',')`);
      return;
    }
    const [name, secret, role, tenant = DEFAULT_TENANT] = parts as [string, string, string, string?];
    const bad: string[] = [];
    if (!NAME.test(name)) bad.push('the name must be 1 or more of A-Z a-z 0-9 _ . -');
    if (!SECRET.test(secret)) bad.push("the secret must be 16 or more visible ASCII characters, none of them ':' or ','");
    if (!ROLE.test(role)) bad.push('the role must be client or operator');
    if (!TENANT.test(tenant)) bad.push('the tenant must be 1 to 64 of A-Z a-z 0-9 _ . -');
    if (bad.length > 0) {
      problems.push(`${at}: ${bad.join('; ')}`);
      return;
    }
    keys.push({ name, secret, role: role as Role, tenant });
    positions.push(i + 1);
  });

  const byName = new Map<string, number[]>();
  const bySecret = new Map<string, number[]>();
  keys.forEach((k, j) => {
    byName.set(k.name, [...(byName.get(k.name) ?? []), j]);
    bySecret.set(k.secret, [...(bySecret.get(k.secret) ?? []), j]);
  });
  const entries = (js: number[]) => js.map((j) => positions[j]).join(', ');
  for (const [name, js] of byName) {
    if (js.length > 1) problems.push(`API_KEYS: the name "${name}" is used by more than one key (entries ${entries(js)})`);
  }
  for (const js of bySecret.values()) {
    if (js.length > 1) {
      const names = js.map((j) => `"${keys[j]!.name}"`).join(', ');
      problems.push(`API_KEYS: the keys ${names} (entries ${entries(js)}) have the same secret; give each its own`);
    }
  }
  return { keys, problems };
}
