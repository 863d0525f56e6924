/** Site policy on the resolved description: limits the admin set in the site config. */
import type { SiteConfig } from '../site/config.js';
import { formatSize } from '../util/size.js';
import type { Description } from './model.js';

export interface PolicyViolation {
  pointer: string;
  message: string;
  expected: string;
  hint: string;
}

/** Every limit the description exceeds. */
export function policyViolations(d: Description, site: SiteConfig): PolicyViolation[] {
  const out: PolicyViolation[] = [];
  const where = `site policy (${site.sources.at(-1)})`;
  if (d.vm.memoryMiB > site.limits.maxMemoryMiB) {
    out.push({ pointer: '/vm/memoryMiB', message: `memory ${formatSize(d.vm.memoryMiB)} exceeds the site limit`, expected: `at most ${formatSize(site.limits.maxMemoryMiB)}`, hint: `limit set by ${where}` });
  }
  if (d.vm.vcpus > site.limits.maxVcpus) {
    out.push({ pointer: '/vm/vcpus', message: `${d.vm.vcpus} vCPUs exceed the site limit`, expected: `at most ${site.limits.maxVcpus}`, hint: `limit set by ${where}` });
  }
  if (d.vm.perNode > site.limits.maxVmsPerNode) {
    out.push({ pointer: '/vm/perNode', message: `${d.vm.perNode} VMs per node exceed the site limit`, expected: `at most ${site.limits.maxVmsPerNode}`, hint: `limit set by ${where}; ask for more nodes instead` });
  }
  return out;
}
