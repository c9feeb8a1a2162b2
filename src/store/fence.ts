/**
 * The rebuild fence (architecture.md, "Fencing the rebuild"): every group-commit transaction holds this advisory
 * lock shared and commits only operations decided under the current generation; a rebuild holds it exclusively
 * while it reads PostgreSQL, refills Redis and bumps the generation.
 */
export const FENCE_LOCK_ID = 7_362_001;
