import { test } from 'node:test';
import assert from 'node:assert/strict';
import { policyIdOf, renderTagTemplate, renderTags } from '../../shared/core/tags.js';
import { ConfigError } from '../../shared/core/errors.js';

const ctx = { applianceId: 'acme-prod', policyId: 'pol-123', policyName: 'web' };

test('tags: placeholders are filled in keys and values', () => {
  assert.deepEqual(renderTags({ Name: 'tender-%policyName%', '%applianceId%:owner': 'backup', Policy: '%policyId%' }, ctx), {
    Name: 'tender-web',
    'acme-prod:owner': 'backup',
    Policy: 'pol-123',
  });
});

test('tags: unknown %words% and lone percent signs are left as written', () => {
  assert.equal(renderTagTemplate('100% %region% %policyName%', ctx), '100% %region% web');
});

test('tags: a value too long for the cloud is refused, naming the tag', () => {
  assert.throws(() => renderTags({ Big: 'x'.repeat(255) + '%policyName%%policyName%' }, ctx), (e: Error) => e instanceof ConfigError && e.message.includes('"Big"'));
});

test('tags: the policy id is stable and differs per appliance', () => {
  assert.equal(policyIdOf('a', 'web'), policyIdOf('a', 'web'));
  assert.notEqual(policyIdOf('a', 'web'), policyIdOf('b', 'web'));
  assert.match(policyIdOf('a', 'web'), /^pol-[0-9a-f]{12}$/);
});
