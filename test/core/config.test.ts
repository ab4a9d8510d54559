import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigYaml } from '../../shared/core/config.js';
import { ConfigError } from '../../shared/core/errors.js';

const good = `
policies:
  - name: web
    provider: local
    vms: { ids: [vm-1] }
    repository: { url: "file:repo", key: { passphraseFile: pass } }
`;

function rejects(yaml: string, ...expected: RegExp[]) {
  assert.throws(
    () => parseConfigYaml(yaml),
    (e: Error) => {
      assert.ok(e instanceof ConfigError, `expected ConfigError, got ${e.name}`);
      for (const re of expected) assert.match(e.message, re);
      return true;
    },
  );
}

test('config: a good config parses with defaults filled in', () => {
  const cfg = parseConfigYaml(good);
  assert.equal(cfg.policies[0]!.retention.daily, 7);
  assert.equal(cfg.policies[0]!.maxConcurrency, 4);
  assert.equal(cfg.policies[0]!.worker.privateNetwork, true);
});

test('config: an unknown key is rejected, naming the policy and the key', () => {
  rejects(good.replace('provider: local', 'provider: local\n    retension: { daily: 3 }'), /policy "web"/, /unknown key "retension"/);
});

test('config: negative retention is rejected, naming the field and the value', () => {
  rejects(good + '    retention: { daily: -1 }\n', /policy "web": retention\.daily must be a whole number ≥ 0 \(got -1\)/);
});

test('config: a missing repository is rejected, naming the field', () => {
  rejects(good.replace(/    repository:.*\n/, ''), /policy "web": repository is required/);
});

test('config: duplicate policy names are rejected', () => {
  const two = good + good.replace('policies:\n', '');
  rejects(two, /policies\.1\.name|policy "web": name/, /must be unique/);
});

test('config: worker profile overrides and tag templates are accepted', () => {
  const cfg = parseConfigYaml(
    good +
      `    worker:
      privateNetwork: true
      profiles: { small: { instanceType: c6i.large } }
      placement: { eu-west-1: { subnet: subnet-1, securityGroups: [sg-1], profiles: { medium: { maxTotalDiskGiB: 4096 } } } }
      tags: { Name: "tender-%policyName%" }
`,
  );
  assert.equal(cfg.policies[0]!.worker.profiles.small?.instanceType, 'c6i.large');
  assert.equal(cfg.policies[0]!.worker.placement['eu-west-1']!.profiles?.medium?.maxTotalDiskGiB, 4096);
});
