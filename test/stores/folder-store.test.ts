import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createFolderStore } from '../../shared/local/folder-store.js';
import { describeObjectStoreContract } from './contract.js';
import { tempDirs } from '../support/temp-dirs.js';

const freshDir = tempDirs('tender-folder-store-');

const text = (s: string) => new TextEncoder().encode(s);

describeObjectStoreContract('local folder', async () => createFolderStore(join(await freshDir(), 'repo')), { readers: true });

describe('folder store specifics', () => {
  it('maps keys with "/" to subfolders', async () => {
    // Prepare
    const dir = await freshDir();
    const store = createFolderStore(dir);
    // Act
    await store.put('index/ab/cd', text('idx'));
    // Assess
    assert.equal(await readFile(join(dir, 'index', 'ab', 'cd'), 'utf8'), 'idx');
    assert.equal(store.location, `file:${dir}`);
  });

  it('refuses keys that could leave the folder', async () => {
    // Prepare
    const dir = await freshDir();
    const store = createFolderStore(join(dir, 'repo'));
    // Act / Assess
    for (const key of ['../escape', 'a/../../escape', '/etc/passwd', 'a//b', './a', 'a\\..\\b']) {
      await assert.rejects(store.put(key, text('x')), { name: 'ConfigError' }, key);
      await assert.rejects(store.get(key), { name: 'ConfigError' }, key);
    }
    await assert.rejects(async () => {
      for await (const _ of store.list('../')) void _;
    }, { name: 'ConfigError' });
    assert.deepEqual(await readdir(dir), [], 'nothing was written anywhere');
  });

  it('leaves no temp files behind and never lists them', async () => {
    // Prepare
    const dir = await freshDir();
    const store = createFolderStore(dir);
    // A temp file a killed writer left behind.
    await mkdir(join(dir, 'packs'), { recursive: true });
    await writeFile(join(dir, 'packs', '.tender-tmp-0123456789abcdef'), 'half a pack');
    // Act
    await store.put('packs/p1', text('pack'));
    assert.equal(await store.putIfAbsent('packs/p2', text('pack')), true);
    assert.equal(await store.putIfAbsent('packs/p2', text('other')), false);
    const listed: string[] = [];
    for await (const i of store.list('')) listed.push(i.key);
    // Assess
    assert.deepEqual(listed.sort(), ['packs/p1', 'packs/p2']);
    assert.deepEqual((await readdir(join(dir, 'packs'))).sort(), ['.tender-tmp-0123456789abcdef', 'p1', 'p2']);
  });

  it('says why when a key and a key below it would collide', async () => {
    // Prepare
    const store = createFolderStore(await freshDir());
    await store.put('a', text('file'));
    await store.put('b/c', text('file'));
    // Act / Assess
    await assert.rejects(store.put('a/b', text('x')), (err: Error) => err.name === 'ConfigError' && /collides/.test(err.message));
    await assert.rejects(store.put('b', text('x')), (err: Error) => err.name === 'ConfigError' && /collides/.test(err.message));
    await assert.rejects(store.putIfAbsent('b', text('x')), (err: Error) => err.name === 'ConfigError' && /collides/.test(err.message));
  });

  it('reports an unreadable folder as AccessDeniedError naming it', { skip: process.getuid?.() === 0 ? 'root reads everything' : false }, async () => {
    // Prepare
    const dir = await freshDir();
    const store = createFolderStore(dir);
    await store.put('locked/obj', text('x'));
    await chmod(join(dir, 'locked'), 0o000);
    try {
      // Act / Assess
      await assert.rejects(store.get('locked/obj'), (err: Error) => err.name === 'AccessDeniedError' && err.message.includes(dir));
    } finally {
      await chmod(join(dir, 'locked'), 0o755);
    }
  });

  it('reads a missing repository folder as empty rather than failing', async () => {
    // Prepare
    const store = createFolderStore(join(await freshDir(), 'not', 'yet'));
    // Act
    const listed: string[] = [];
    for await (const i of store.list('')) listed.push(i.key);
    // Assess
    assert.deepEqual(listed, []);
    assert.equal(await store.stat('config'), undefined);
    await assert.rejects(store.get('config'), { name: 'NotFoundError' });
  });
});
