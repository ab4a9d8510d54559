import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectWorkerProfile } from '../../shared/core/profiles.js';
import { ConfigError } from '../../shared/core/errors.js';

const GiB = 1024 ** 3;

const table: Array<[string, number, string, string]> = [
  ['100 GiB', 100 * GiB, 'small', 'c5.large'],
  ['exactly 1024 GiB', 1024 * GiB, 'small', 'c5.large'],
  ['just over 1 TiB', 1024 * GiB + 1, 'medium', 'c5.2xlarge'],
  ['16 TiB', 16 * 1024 * GiB, 'medium', 'c5.2xlarge'],
  ['20 TiB', 20 * 1024 * GiB, 'large', 'c5.4xlarge'],
];

for (const [label, bytes, profile, type] of table) {
  test(`profiles: a VM with ${label} of disks gets the ${profile} worker (${type})`, () => {
    const p = selectWorkerProfile({ provider: 'aws', totalDiskBytes: bytes });
    assert.equal(p.name, profile);
    assert.equal(p.instanceType, type);
  });
}

test('profiles: archive transfers take the archive profile', () => {
  assert.equal(selectWorkerProfile({ provider: 'aws', totalDiskBytes: 10 * GiB, purpose: 'archive' }).instanceType, 'c5.2xlarge');
});

test('profiles: Azure has its own sizes with the same thresholds', () => {
  assert.equal(selectWorkerProfile({ provider: 'azure', totalDiskBytes: 10 * GiB }).instanceType, 'Standard_F2s_v2');
  assert.equal(selectWorkerProfile({ provider: 'azure', totalDiskBytes: 2048 * GiB }).instanceType, 'Standard_F8s_v2');
});

test('profiles: a policy override changes the type and keeps the default limit', () => {
  const p = selectWorkerProfile({ provider: 'aws', totalDiskBytes: 10 * GiB, overrides: { small: { instanceType: 'c6i.large' } } });
  assert.equal(p.instanceType, 'c6i.large');
  assert.equal(p.maxTotalDiskGiB, 1024);
});

test('profiles: a region override wins over the policy override, in that region only', () => {
  const placement = { 'eu-west-1': { subnet: 'subnet-1', securityGroups: [], profiles: { small: { instanceType: 'm5.large', maxTotalDiskGiB: 50 } } } };
  const overrides = { small: { instanceType: 'c6i.large' } };
  assert.equal(selectWorkerProfile({ provider: 'aws', totalDiskBytes: 10 * GiB, overrides, region: 'eu-west-1', placement }).instanceType, 'm5.large');
  assert.equal(selectWorkerProfile({ provider: 'aws', totalDiskBytes: 60 * GiB, overrides, region: 'eu-west-1', placement }).name, 'medium');
  assert.equal(selectWorkerProfile({ provider: 'aws', totalDiskBytes: 10 * GiB, overrides, region: 'us-east-1', placement }).instanceType, 'c6i.large');
});

test('profiles: a VM above a limited large profile is refused with the fix', () => {
  assert.throws(
    () => selectWorkerProfile({ provider: 'aws', totalDiskBytes: 40 * 1024 * GiB, overrides: { large: { maxTotalDiskGiB: 32 * 1024 } } }),
    (e: Error) => e instanceof ConfigError && /worker\.profiles\.large\.maxTotalDiskGiB/.test(e.message),
  );
});
