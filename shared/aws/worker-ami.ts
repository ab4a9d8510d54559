// The worker's machine image: the latest Amazon Linux 2023 (or Ubuntu 22.04)
// from AWS's public SSM parameters, so workers never run a stale image and no
// AMI id is baked into the deployment. Overridable with an AMI id or another
// SSM parameter (e.g. a hardened image with Node.js preinstalled).

import { GetParameterCommand, type SSMClient } from '@aws-sdk/client-ssm';
import { ConfigError } from '../core/errors.js';
import { awsCall } from './aws-errors.js';

export type WorkerOs = 'al2023' | 'ubuntu2204';

/** Graviton families carry a "g" right after the generation digit (c6g, m7gd, c7gn, t4g) — and a1. */
export function archOf(instanceType: string): 'x86_64' | 'arm64' {
  return /^(a1|[a-z]+\d+g[a-z]*)\./.test(instanceType) ? 'arm64' : 'x86_64';
}

export function publicAmiParameter(os: WorkerOs, arch: 'x86_64' | 'arm64'): string {
  if (os === 'al2023') return `/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${arch}`;
  return `/aws/service/canonical/ubuntu/server/22.04/stable/current/${arch === 'arm64' ? 'arm64' : 'amd64'}/hvm/ebs-gp2/ami-id`;
}

const cache = new Map<string, { imageId: string; at: number }>();
const TTL_MS = 10 * 60_000;

/**
 * `override`: an AMI id (ami-…) used as is, or an SSM parameter name (/…) read
 * instead of the public one. Without it, the public parameter of `os` for the
 * instance type's architecture.
 */
export async function resolveWorkerAmi(opts: { ssm: SSMClient; region: string; instanceType: string; os?: WorkerOs; override?: string; now?: () => number }): Promise<string> {
  const override = opts.override?.trim();
  if (override && /^ami-[0-9a-f]{8,17}$/.test(override)) return override;
  if (override && !override.startsWith('/')) {
    throw new ConfigError(`worker AMI override "${override}" is neither an AMI id (ami-…) nor an SSM parameter name (/…) — fix TENDER_WORKER_AMI`);
  }
  const os = opts.os ?? 'al2023';
  if (os !== 'al2023' && os !== 'ubuntu2204') throw new ConfigError(`worker OS "${os}" is not supported: use al2023 or ubuntu2204 (TENDER_WORKER_OS)`);
  const name = override ?? publicAmiParameter(os, archOf(opts.instanceType));
  const now = opts.now ?? Date.now;
  const key = `${opts.region}:${name}`;
  const hit = cache.get(key);
  if (hit && now() - hit.at < TTL_MS) return hit.imageId;
  const res = await awsCall(
    `ssm:GetParameter ${name} in ${opts.region}`,
    () => opts.ssm.send(new GetParameterCommand({ Name: name })),
    `the deploy-worker role needs ssm:GetParameter on ${name}`,
  );
  const imageId = res.Parameter?.Value;
  if (!imageId || !/^ami-/.test(imageId)) throw new ConfigError(`SSM parameter ${name} in ${opts.region} holds "${imageId ?? ''}", not an AMI id`);
  cache.set(key, { imageId, at: now() });
  return imageId;
}

/** Tests start from an empty cache. */
export function clearAmiCache(): void {
  cache.clear();
}
