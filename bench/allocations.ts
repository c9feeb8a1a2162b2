import v8 from 'node:v8';

/**
 * Bytes the JavaScript heap allocated from `new AllocationCounter()` to `stop()` (issue 15: "KiB allocated per
 * request"). V8 counts no allocations, but its garbage collector reports the heap's size before and after each
 * collection (v8.GCProfiler): what was allocated is every rise of the used heap, from the start or a collection's
 * end to the next collection's start (or to `stop()`). Objects allocated straight into old space are counted
 * too; memory outside the heap (Buffers' bytes) is not.
 */
export class AllocationCounter {
  private readonly profiler = new v8.GCProfiler();
  private readonly usedAtStart = v8.getHeapStatistics().used_heap_size;

  constructor() {
    this.profiler.start();
  }

  stop(): number | null {
    const usedAtStop = v8.getHeapStatistics().used_heap_size;
    const profile = this.profiler.stop() as unknown as { statistics?: GcEvent[] } | undefined;
    if (!profile?.statistics) return null;
    let allocated = 0;
    let used = this.usedAtStart;
    for (const gc of profile.statistics) {
      allocated += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - used);
      used = gc.afterGC.heapStatistics.usedHeapSize;
    }
    return allocated + Math.max(0, usedAtStop - used);
  }
}

interface GcEvent {
  beforeGC: { heapStatistics: { usedHeapSize: number } };
  afterGC: { heapStatistics: { usedHeapSize: number } };
}
