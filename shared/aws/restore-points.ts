// RestorePoints for the retention step on Lambda: the repository opened the
// way the worker opens it (S3 store from the URL; the KMS key, or the
// passphrase from SSM / Secrets Manager).

import type { S3Client } from '@aws-sdk/client-s3';
import type { SSMClient } from '@aws-sdk/client-ssm';
import type { RestorePoints } from '../ports/restore-points.js';
import { resolveAwsRepositorySecret } from './repository-key.js';

export function createAwsRestorePoints(opts: { ssm: () => SSMClient; s3Client?: () => S3Client; env?: NodeJS.ProcessEnv }): RestorePoints {
  // Loaded on use: the data mover carries a native codec only this step needs.
  const port = async () => {
    const [{ openStoreFromUrl }, { createRestorePointsPort }] = await Promise.all([import('../../worker/store-from-url.js'), import('../../worker/restore-points.js')]);
    return createRestorePointsPort({
      openStore: (url) => openStoreFromUrl(url, { ...(opts.s3Client ? { s3Client: opts.s3Client() } : {}), env: opts.env }),
      secret: (key) => resolveAwsRepositorySecret(key, { ssm: opts.ssm, env: opts.env }),
    });
  };
  return {
    list: async (ref, filter) => (await port()).list(ref, filter),
    forget: async (ref, ids) => (await port()).forget(ref, ids),
    prune: async (ref, settings) => (await port()).prune(ref, settings),
  };
}
