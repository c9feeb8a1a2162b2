/**
 * Summarises a V8 .cpuprofile (node --cpu-prof, which `npm run bench -- --profile` passes to the service):
 * self time by function and by package. Also a CLI: npx tsx bench/profile.ts <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { round } from './stats.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  /** Share of samples in which the process was idle (waiting on I/O). */
  idlePercent: number;
  functions: { name: string; where: string; selfMs: number; percent: number }[];
  packages: { name: string; selfMs: number; percent: number }[];
  /**
   * Self time charged to the nearest caller in an npm package or in this repository (so a socket write made
   * for ioredis counts for ioredis, not for Node's internals).
   */
  owners: { name: string; selfMs: number; percent: number }[];
}

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

/** Where a function lives: an npm package, a folder of this repository, Node itself, or V8's pseudo-frames. */
function packageOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return 'node:' + (url.slice(5).split('/')[0] ?? '');
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.startsWith(repoRoot)) return path.slice(repoRoot.length).split('/').slice(0, 2).join('/');
  return path;
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;

  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ownerOf = (id: number): string => {
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const { url, functionName } = byId.get(at)!.callFrame;
      if (!url && functionName.startsWith('(')) return functionName; // (idle), (garbage collector), (program)
      const pkg = packageOf(url, functionName);
      if (!pkg.startsWith('node:') && pkg !== '(native)') return pkg;
    }
    return '(node internals)';
  };
  const owners = new Map<string, number>();

  const functions = new Map<string, { name: string; where: string; us: number }>();
  const packages = new Map<string, number>();
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === '(idle)') idleUs += us;
    const name = functionName || '(anonymous)';
    const where = url ? `${url.replace(/^file:\/\//, '').replace(repoRoot, '')}:${lineNumber + 1}` : '';
    const key = `${name}\u0000${where}`;
    const f = functions.get(key) ?? { name, where, us: 0 };
    f.us += us;
    functions.set(key, f);
    const pkg = packageOf(url, functionName);
    packages.set(pkg, (packages.get(pkg) ?? 0) + us);
    const owner = ownerOf(id);
    owners.set(owner, (owners.get(owner) ?? 0) + us);
  }
  const pct = (us: number) => round((us / totalUs) * 100, 1);
  return {
    file,
    totalMs: round(totalUs / 1000, 0),
    idlePercent: pct(idleUs),
    functions: [...functions.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, selfMs: round(f.us / 1000, 0), percent: pct(f.us) })),
    packages: [...packages.entries()]
      .sort(([, a], [, b]) => b - a)
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: round(us / 1000, 0), percent: pct(us) })),
    owners: [...owners.entries()]
      .sort(([, a], [, b]) => b - a)
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: round(us / 1000, 0), percent: pct(us) })),
  };
}

export function formatProfile(s: ProfileSummary): string {
  const lines = [`${s.file}: ${s.totalMs} ms sampled, ${s.idlePercent}% idle`, '', 'self time by package:'];
  for (const p of s.packages) lines.push(`  ${String(p.percent).padStart(5)}%  ${p.name}`);
  lines.push('', 'self time by owner (nearest caller in a package or in this repository):');
  for (const p of s.owners) lines.push(`  ${String(p.percent).padStart(5)}%  ${p.name}`);
  lines.push('', 'self time by function:');
  for (const f of s.functions) lines.push(`  ${String(f.percent).padStart(5)}%  ${f.name}  ${f.where}`);
  return lines.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: tsx bench/profile.ts <file.cpuprofile> [top]');
    process.exit(2);
  }
  console.log(formatProfile(summarizeProfile(file, Number(process.argv[3] ?? 25))));
}
