// Regional clients and cross-account credentials. Adapters take a
// `ClientsFor` so tests pass mocked clients; the default keeps one client per
// service and Region at module scope, so warm Lambda invocations reuse them.
//
// Cross-account: snapshot steps act in the production account through a role
// assumed with an external ID (the confused-deputy guard AWS recommends for
// third-party access); workers run in the backup account.

import { EC2Client } from '@aws-sdk/client-ec2';
import { SSMClient } from '@aws-sdk/client-ssm';
import { SQSClient } from '@aws-sdk/client-sqs';
import { S3Client } from '@aws-sdk/client-s3';
import { STSClient, AssumeRoleCommand } from '@aws-sdk/client-sts';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@aws-sdk/types';
import { ConfigError } from '../core/errors.js';
import { normaliseAwsError } from './aws-errors.js';

export interface ClientsFor {
  ec2(region: string): EC2Client;
  ssm(region: string): SSMClient;
  sqs(region: string): SQSClient;
}

export interface AssumedRole {
  roleArn: string;
  externalId?: string;
}

const cache = new Map<string, unknown>();

function cached<T>(key: string, make: () => T): T {
  let c = cache.get(key) as T | undefined;
  if (!c) {
    c = make();
    cache.set(key, c);
  }
  return c;
}

/** Credentials of a role assumed with STS, refreshed five minutes before they expire. */
export function assumeRoleCredentials(opts: AssumedRole & { sessionName?: string; sts?: STSClient; durationSeconds?: number }): AwsCredentialIdentityProvider {
  if (!/^arn:aws[a-z-]*:iam::\d{12}:role\/.+/.test(opts.roleArn)) {
    throw new ConfigError(`"${opts.roleArn}" is not an IAM role ARN (arn:aws:iam::123456789012:role/Name) — fix TENDER_SNAPSHOT_ROLE_ARN`);
  }
  const sts = opts.sts ?? cached('sts', () => new STSClient({}));
  let current: AwsCredentialIdentity | undefined;
  let pending: Promise<AwsCredentialIdentity> | undefined;
  return async () => {
    if (current?.expiration && current.expiration.getTime() - Date.now() > 5 * 60_000) return current;
    pending ??= (async () => {
      try {
        const res = await sts.send(
          new AssumeRoleCommand({
            RoleArn: opts.roleArn,
            RoleSessionName: (opts.sessionName ?? 'tender').replace(/[^\w+=,.@-]/g, '-').slice(0, 64),
            ...(opts.externalId ? { ExternalId: opts.externalId } : {}),
            DurationSeconds: opts.durationSeconds ?? 3600,
          }),
        );
        const c = res.Credentials;
        if (!c?.AccessKeyId || !c.SecretAccessKey) throw new Error('AssumeRole returned no credentials');
        current = { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken, expiration: c.Expiration };
        return current;
      } catch (e) {
        throw normaliseAwsError(
          e,
          `sts:AssumeRole ${opts.roleArn}`,
          `the role's trust policy must allow this principal${opts.externalId ? ' with this external ID (sts:ExternalId condition)' : ''}, and this principal needs sts:AssumeRole on it`,
        );
      } finally {
        pending = undefined;
      }
    })();
    return pending;
  };
}

/** Default clients: one per service and Region, optionally acting as an assumed role. */
export function defaultClients(role?: AssumedRole): ClientsFor {
  const credentials = role ? cached(`creds:${role.roleArn}`, () => assumeRoleCredentials({ ...role, sessionName: 'tender-pipeline' })) : undefined;
  const tag = role?.roleArn ?? 'self';
  return {
    ec2: (region) => cached(`ec2:${region}:${tag}`, () => new EC2Client({ region, ...(credentials ? { credentials } : {}) })),
    ssm: (region) => cached(`ssm:${region}:${tag}`, () => new SSMClient({ region, ...(credentials ? { credentials } : {}) })),
    sqs: (region) => cached(`sqs:${region}:${tag}`, () => new SQSClient({ region, ...(credentials ? { credentials } : {}) })),
  };
}

export function defaultS3Client(region?: string): S3Client {
  return cached(`s3:${region ?? 'default'}`, () => new S3Client(region ? { region } : {}));
}

/** The same client for every Region: for tests with one mocked client per service. */
export function sameClients(c: { ec2?: EC2Client; ssm?: SSMClient; sqs?: SQSClient }): ClientsFor {
  const need = <T>(x: T | undefined, name: string): T => {
    if (!x) throw new ConfigError(`no ${name} client was given`);
    return x;
  };
  return { ec2: () => need(c.ec2, 'EC2'), ssm: () => need(c.ssm, 'SSM'), sqs: () => need(c.sqs, 'SQS') };
}
