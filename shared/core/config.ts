// tender.config.yaml: the policy model, checked at start with messages that
// name the policy, the field and the fix. Strict: an unknown key is an error
// (a typo must not silently disable retention).

import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors.js';

export const PROVIDERS = ['local', 'aws', 'azure'] as const;
export type Provider = (typeof PROVIDERS)[number];

const count = z.number({ error: 'must be a whole number ≥ 0' }).int('must be a whole number ≥ 0').min(0, 'must be a whole number ≥ 0');

export const RetentionSchema = z.strictObject({
  /** The newest N restore points, whatever their age. */
  last: count.default(0),
  daily: count.default(7),
  weekly: count.default(4),
  monthly: count.default(12),
  yearly: count.default(0),
});
export type Retention = z.infer<typeof RetentionSchema>;

/**
 * What a run does to the repository after retention: prune (two-phase, under the exclusive lock;
 * docs/repository-format.md), repacking packs restore points need less than `repackBelow` of,
 * copying at most `maxRepackMiB` of blocks per run (the sparsest packs first, the rest next run).
 */
export const MaintenanceSchema = z.strictObject({
  prune: z.boolean({ error: 'must be true or false' }).default(true),
  repackBelow: z.number({ error: 'must be a share from 0 (never repack) to 1, such as 0.5' }).min(0, 'must be a share from 0 (never repack) to 1, such as 0.5').max(1, 'must be a share from 0 (never repack) to 1, such as 0.5').default(0.5),
  maxRepackMiB: count.default(2048),
});
export type Maintenance = z.infer<typeof MaintenanceSchema>;
export const DEFAULT_MAINTENANCE: Maintenance = { prune: true, repackBelow: 0.5, maxRepackMiB: 2048 };

/** Where the repository key comes from. Never the key itself. */
export const KeyRefSchema = z.union([
  z.strictObject({ passphraseEnv: z.string().min(1) }),
  z.strictObject({ passphraseFile: z.string().min(1) }),
  z.strictObject({ kmsKeyId: z.string().min(1), passphraseSecretArn: z.string().min(1).optional() }),
  z.strictObject({ keyVaultKeyId: z.string().url(), passphraseSecretId: z.string().url().optional() }),
], { error: 'must be one of { passphraseEnv }, { passphraseFile }, { kmsKeyId }, { keyVaultKeyId }' });
export type KeyRef = z.infer<typeof KeyRefSchema>;

export const RepositorySchema = z.strictObject({
  /** file:///abs/path, file:relative/path, s3://bucket/prefix, azblob://account/container/prefix */
  url: z
    .string({ error: 'is required: where restore points are written (file:…, s3://…, azblob://…)' })
    .regex(/^(file:|s3:\/\/|azblob:\/\/)/, 'must start with file:, s3:// or azblob://'),
  key: KeyRefSchema,
});

export const WorkerProfileSchema = z.strictObject({
  /** Instance type / VM size; omitted = the default profile's. */
  instanceType: z.string().min(1).optional(),
  /** Up to this many GiB of total disk size this profile is used (inclusive); omitted = the default profile's limit (large has none). */
  maxTotalDiskGiB: z.number({ error: 'must be a number of GiB > 0' }).positive('must be a number of GiB > 0').optional(),
});
export type WorkerProfile = { name: string; instanceType: string; maxTotalDiskGiB?: number };

const ProfilesSchema = z.strictObject({
  small: WorkerProfileSchema.optional(),
  medium: WorkerProfileSchema.optional(),
  large: WorkerProfileSchema.optional(),
  archive: WorkerProfileSchema.optional(),
});
export type ProfileOverrides = z.infer<typeof ProfilesSchema>;

export const PlacementSchema = z.strictObject({
  subnet: z.string().min(1),
  securityGroups: z.array(z.string().min(1)).default([]),
  /** Azure: the VNET of the subnet; AWS: the VPC (for preflight). */
  network: z.string().optional(),
  /** Profiles overridden in this region only. */
  profiles: ProfilesSchema.optional(),
});
export type Placement = z.infer<typeof PlacementSchema>;

export const WorkerSettingsSchema = z.strictObject({
  privateNetwork: z.boolean().default(true),
  profiles: ProfilesSchema.default({}),
  /** Region → where workers go there. */
  placement: z.record(z.string(), PlacementSchema).default({}),
  /** Tags put on workers; values may use %applianceId%, %policyId%, %policyName%. */
  tags: z.record(z.string(), z.string()).default({}),
});

const CRON = /^(\S+\s+){4}\S+$/;

export const PolicySchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be lowercase letters, digits and dashes (1–63)'),
  provider: z.enum(PROVIDERS, { error: `must be one of ${PROVIDERS.join(', ')}` }),
  enabled: z.boolean().default(true),
  vms: z
    .strictObject({ ids: z.array(z.string().min(1)).optional(), tags: z.record(z.string(), z.string()).optional() })
    .refine((v) => (v.ids?.length ?? 0) > 0 || Object.keys(v.tags ?? {}).length > 0, 'must name VM ids or tags to select'),
  schedule: z.string().regex(CRON, 'must be a 5-field cron expression, e.g. "0 2 * * *"').default('0 2 * * *'),
  maxConcurrency: z.number().int().min(1).max(40).default(4),
  retention: RetentionSchema.default({ last: 0, daily: 7, weekly: 4, monthly: 12, yearly: 0 }),
  maintenance: MaintenanceSchema.default(DEFAULT_MAINTENANCE),
  repository: RepositorySchema,
  worker: WorkerSettingsSchema.default({ privateNetwork: true, profiles: {}, placement: {}, tags: {} }),
});
export type Policy = z.infer<typeof PolicySchema>;

export const LocalVmSchema = z.strictObject({
  id: z.string().min(1),
  name: z.string().min(1).optional(),
  tags: z.record(z.string(), z.string()).default({}),
  disks: z.array(z.strictObject({ id: z.string().min(1), path: z.string().min(1) })).min(1, 'needs at least one disk'),
});
export type LocalVm = z.infer<typeof LocalVmSchema>;

export const ConfigSchema = z
  .strictObject({
    version: z.literal(1, { error: 'must be 1' }).default(1),
    /** Identifies this deployment in tags (%applianceId%). */
    applianceId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be lowercase letters, digits and dashes').default('tender'),
    /** The local embedded default's VMs: each disk a raw image file. */
    local: z.strictObject({ vms: z.array(LocalVmSchema).default([]), workDir: z.string().default('.tender') }).optional(),
    policies: z.array(PolicySchema).min(1, 'needs at least one policy'),
  })
  .superRefine((cfg, ctx) => {
    const seen = new Set<string>();
    cfg.policies.forEach((p, i) => {
      if (seen.has(p.name)) ctx.addIssue({ code: 'custom', path: ['policies', i, 'name'], message: `duplicates another policy's name "${p.name}": policy names must be unique` });
      seen.add(p.name);
    });
  });
export type Config = z.infer<typeof ConfigSchema>;

function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

function valueAt(root: unknown, path: PropertyKey[]): unknown {
  let cur: any = root;
  for (const k of path) {
    if (cur == null) return undefined;
    cur = cur[k as any];
  }
  return cur;
}

/** Turns zod issues into lines a person can act on: `policy "web": retention.daily must be … (got -1)`. */
export function formatConfigIssues(raw: unknown, issues: z.core.$ZodIssue[]): string[] {
  return issues.map((issue) => {
    const path = [...issue.path];
    let where = '';
    if (path[0] === 'policies' && typeof path[1] === 'number') {
      const name = valueAt(raw, ['policies', path[1], 'name']);
      where = typeof name === 'string' ? `policy "${name}": ` : `policies[${path[1]}]: `;
      path.splice(0, 2);
    } else if (path[0] === 'local' && path[1] === 'vms' && typeof path[2] === 'number') {
      const id = valueAt(raw, ['local', 'vms', path[2], 'id']);
      where = typeof id === 'string' ? `local vm "${id}": ` : `local.vms[${path[2]}]: `;
      path.splice(0, 3);
    }
    const field = path.map(String).join('.') || '(top level)';
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as any).keys as string[];
      const at = path.length ? `${field}: ` : '';
      return `${where}${at}unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')} — remove ${keys.length > 1 ? 'them' : 'it'} or check the spelling`;
    }
    const got = valueAt(raw, issue.path as PropertyKey[]);
    let message = issue.message;
    if (got === undefined && /expected|required|Invalid input/i.test(message)) message = 'is required';
    const suffix = got === undefined ? '' : ` (got ${describeValue(got)})`;
    return `${where}${field} ${message}${suffix}`;
  });
}

export function parseConfig(raw: unknown, source = 'tender.config.yaml'): Config {
  const res = ConfigSchema.safeParse(raw);
  if (!res.success) {
    const lines = formatConfigIssues(raw, res.error.issues);
    throw new ConfigError(`${source} is not valid:\n  - ${lines.join('\n  - ')}`);
  }
  return res.data;
}

export function parseConfigYaml(text: string, source = 'tender.config.yaml'): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${source} is not valid YAML: ${(e as Error).message}`, { cause: e });
  }
  return parseConfig(raw, source);
}

export function findPolicy(cfg: Config, name: string): Policy {
  const p = cfg.policies.find((x) => x.name === name);
  if (!p) throw new ConfigError(`no policy named "${name}" — the config has: ${cfg.policies.map((x) => x.name).join(', ')}`);
  return p;
}
