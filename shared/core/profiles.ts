// Worker sizing: the profile is chosen by the VM's total disk size, as the
// seed documents describe (small < 1 TiB, medium up to 16 TiB, large beyond;
// archive for archive repositories), with overrides per policy and per region.

import type { Placement, ProfileOverrides, Provider, WorkerProfile } from './config.js';
import { ConfigError } from './errors.js';

export type ProfileName = 'small' | 'medium' | 'large' | 'archive';

type ProfileTable = Record<ProfileName, { instanceType: string; maxTotalDiskGiB?: number }>;

/** Seed 001 (Veeam Backup for AWS worker profiles). */
const AWS_DEFAULTS: ProfileTable = {
  small: { instanceType: 'c5.large', maxTotalDiskGiB: 1024 },
  medium: { instanceType: 'c5.2xlarge', maxTotalDiskGiB: 16 * 1024 },
  large: { instanceType: 'c5.4xlarge' },
  archive: { instanceType: 'c5.2xlarge' },
};

/**
 * The Azure seed (000) names no VM sizes, so these are the compute-optimised
 * sizes closest to the AWS ones (2, 8 and 16 vCPU), with the same thresholds.
 */
const AZURE_DEFAULTS: ProfileTable = {
  small: { instanceType: 'Standard_F2s_v2', maxTotalDiskGiB: 1024 },
  medium: { instanceType: 'Standard_F8s_v2', maxTotalDiskGiB: 16 * 1024 },
  large: { instanceType: 'Standard_F16s_v2' },
  archive: { instanceType: 'Standard_F8s_v2' },
};

/** Local workers are processes; the names only show which profile would apply. */
const LOCAL_DEFAULTS: ProfileTable = {
  small: { instanceType: 'process-small', maxTotalDiskGiB: 1024 },
  medium: { instanceType: 'process-medium', maxTotalDiskGiB: 16 * 1024 },
  large: { instanceType: 'process-large' },
  archive: { instanceType: 'process-archive' },
};

export const DEFAULT_PROFILES: Record<Provider, ProfileTable> = { aws: AWS_DEFAULTS, azure: AZURE_DEFAULTS, local: LOCAL_DEFAULTS };

const GiB = 1024 ** 3;

/**
 * The profiles in force in `region`: defaults, then the policy's overrides,
 * then the region's. An override that leaves out `maxTotalDiskGiB` keeps the
 * limit of the profile it overrides.
 */
export function effectiveProfiles(
  provider: Provider,
  overrides: ProfileOverrides = {},
  regionOverrides: ProfileOverrides = {},
): Record<ProfileName, WorkerProfile> {
  const out = {} as Record<ProfileName, WorkerProfile>;
  for (const name of ['small', 'medium', 'large', 'archive'] as const) {
    out[name] = { name, ...DEFAULT_PROFILES[provider][name], ...stripUndefined(overrides[name]), ...stripUndefined(regionOverrides[name]) };
  }
  return out;
}

function stripUndefined<T extends object>(o: T | undefined): Partial<T> {
  if (!o) return {};
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Picks the profile for a VM whose disks add up to `totalDiskBytes`: the first
 * of small, medium, large whose limit (inclusive) holds it; large has no limit
 * unless overridden, and then a VM above every limit is an error rather than
 * a worker too small for it. `purpose: 'archive'` always takes the archive profile.
 */
export function selectWorkerProfile(opts: {
  provider: Provider;
  totalDiskBytes: number;
  overrides?: ProfileOverrides;
  region?: string;
  placement?: Record<string, Placement>;
  purpose?: 'backup' | 'archive';
}): WorkerProfile {
  const regionOverrides = opts.region ? opts.placement?.[opts.region]?.profiles : undefined;
  const profiles = effectiveProfiles(opts.provider, opts.overrides, regionOverrides);
  if (opts.purpose === 'archive') return profiles.archive;
  const gib = opts.totalDiskBytes / GiB;
  for (const name of ['small', 'medium', 'large'] as const) {
    const p = profiles[name];
    if (p.maxTotalDiskGiB === undefined || gib <= p.maxTotalDiskGiB) return p;
  }
  throw new ConfigError(
    `no worker profile fits a VM with ${gib.toFixed(1)} GiB of disks: the large profile is limited to ${profiles.large.maxTotalDiskGiB} GiB — raise worker.profiles.large.maxTotalDiskGiB or remove it`,
  );
}
