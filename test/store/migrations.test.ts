import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * Landed migrations are append-only: a database that already ran one never runs it again, so an edit reaches new
 * databases only and the two drift apart. Each landed migration's sha256 is recorded here; a change to the schema
 * is a new numbered file, recorded in the same commit that adds it.
 *
 * (The record is this table, not a file in migrations/: node-pg-migrate takes every file there for a migration.)
 */
const LANDED: Record<string, string> = {
  '001_initial.sql': '182ae083badbd62f8ba15a1f8891f5d4405f86170b11639b5f0531943fa059a0',
  '002_write_batches.sql': 'fdd83b48de2bf9c9462f33c121321ffffff8b151dc2646710678c0493b93f063',
  '003_reservation_tenant.sql': '818f2529ee16e75dd14e774edc80ca429f4541b46b71d11525807bc8914a19c4',
  '004_stock_intents.sql': '6d841e6b5e958cdb96f0e5122e83f1ca7941e82cadb308b390fd5b40c70b4b75',
  '005_safety_stock.sql': '3bf2467cbea8bc672a0fa391bb33b4366790b061cb35665719081d4168894ea9',
  '006_allocation.sql': '041a8181930f95a5d997b4d884f6d9ccdb47bbe52c362f752f719656b6e38fd3',
  '007_reservation_version.sql': '800ef34a4b168aaeb330f79d86f9c54bd51886c8147886f6baa72b81ec98b0bd',
  '008_reservations_reference.sql': '880e2e2ebb6ae472e97f9b886da1a1cfb4659302c034d9288f9774fe3c015928',
  '009_partial_confirm.sql': 'e508e91e3b5315faf02fe9b456af4edcc2dd3c07a653207058edd9700fc63b26',
  '010_events.sql': '763d6f585a0ce328cf538ee806361b231e6231bb4ed79198d84252b945141659',
  '011_event_feed.sql': 'df50ca5623470f36d5d82733b1c0e23f5e5b625b77b70fd15be707bc3d51871e',
};

const dir = new URL('../../migrations/', import.meta.url);
const files = readdirSync(dir).filter((f) => !f.startsWith('.'));
const sha256 = (file: string) => createHash('sha256').update(readFileSync(new URL(file, dir))).digest('hex');

describe('migrations', () => {
  it.each(files)('%s is recorded, with the content it landed with', (file) => {
    const recorded = LANDED[file];
    const actual = sha256(file);
    expect(
      recorded,
      `migrations/${file} is not recorded: once it is final, add '${file}': '${actual}' to LANDED in test/store/migrations.test.ts in the commit that adds it`,
    ).toBeDefined();
    expect(
      actual,
      `migrations/${file} changed after it landed: databases that ran it will not run it again. Restore it ` +
        '(git checkout <its landing commit> -- the file) and put the change in a new numbered migration',
    ).toBe(recorded);
  });

  it('every recorded migration is still there (a landed migration is never renamed or removed)', () => {
    expect(Object.keys(LANDED).filter((f) => !files.includes(f))).toEqual([]);
  });
});
