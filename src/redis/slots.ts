import calculateSlot from 'cluster-key-slot';

/** Redis Cluster's hash slots: a key's slot is CRC16 of its hash tag (or of the whole key) mod 16384. */
export const SLOT_COUNT = 16_384;

let tags: string[] | undefined;

/**
 * A short hash tag for every slot (tags[slot] hashes to slot), so state a script must see beside any key, such as the
 * generation marker, can be kept once per slot: `{<tag>}` puts a key in that slot. Found by counting up in base 36
 * (about 170,000 CRCs, a few milliseconds, once per process).
 */
export function slotTag(slot: number): string {
  if (!tags) {
    const found: string[] = new Array<string>(SLOT_COUNT);
    let missing = SLOT_COUNT;
    for (let n = 0; missing > 0; n++) {
      const tag = n.toString(36);
      const s = calculateSlot(tag);
      if (found[s] === undefined) {
        found[s] = tag;
        missing--;
      }
    }
    tags = found;
  }
  return tags[slot]!;
}

export { calculateSlot as slotOf };

/** Every slot's hash tag, in slot order, separated by ',' (tags are base 36: no ','). */
export const slotTagList = (): string => Array.from({ length: SLOT_COUNT }, (_, slot) => slotTag(slot)).join(',');
