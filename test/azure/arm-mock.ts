// Mocked Azure Resource Manager clients: plain objects with the SDK's method
// shapes (compute, network, storage) over an in-memory world that behaves the
// way ARM does where Tender depends on it — long-running operations, paged
// listings, snapshots copying in the background, SAS export making a snapshot
// "ActiveSAS" (and undeletable), VMs booting, cascading deletes — and that
// fails the way ARM fails (RestError with statusCode and code): 404
// ResourceNotFound, 409 conflicts, 429 throttling, OperationNotAllowed for
// quota, AllocationFailed.

import type { ArmClients, Lro } from '../../shared/azure/clients.js';

export function restError(statusCode: number, code: string, message: string): Error {
  return Object.assign(new Error(message), { name: 'RestError', statusCode, code, details: { error: { code, message } } });
}

const notFound = (type: string, name: string) => restError(404, 'ResourceNotFound', `The Resource 'Microsoft.${type}/${name}' under resource group 'rg-tender' was not found.`);

function lro<T>(fn: () => Promise<T> | T): Lro<T> {
  let p: Promise<T> | undefined;
  const run = () => (p ??= Promise.resolve().then(fn));
  return {
    then: (a, b) => run().then(a, b),
    submitted: async () => {
      await run();
    },
  };
}

async function* paged<T>(items: T[]): AsyncIterable<T> {
  for (const x of items) yield x;
}

export const SUB = '00000000-0000-0000-0000-000000000001';
export const RG = 'rg-tender';
export const id = (rg: string, provider: string, type: string, name: string) => `/subscriptions/${SUB}/resourceGroups/${rg}/providers/${provider}/${type}/${name}`;

export interface ArmWorld {
  vms: Map<string, any>;
  disks: Map<string, any>;
  snapshots: Map<string, any>;
  diskAccesses: Map<string, any>;
  accounts: Map<string, any>;
  endpoints: Map<string, any>;
  subnets: Map<string, any>;
  nics: Map<string, any>;
  pips: Map<string, any>;
  runCommands: Map<string, any>;
  dnsGroups: Map<string, any>;
  /** Every call, as "group.method name". */
  calls: string[];
  /** Errors thrown by the next calls of "group.method" (one per call, in order). */
  failNext: Map<string, Error[]>;
  /** Instance-view reads before a new VM reports running with its agent ready. */
  bootPolls: number;
  /** revokeAccess calls that leave the snapshot ActiveSAS (a revoke that did not hold). */
  stickySas: number;
  /** The SAS grantAccess hands out for a snapshot name (default a made-up managed-disk URL). */
  sasFor?: (snapshotName: string) => string;
  /** Runs the install command (default: success with the digest it was given). */
  runInstall?: (rc: any) => Promise<{ exitCode: number; output: string; error: string; executionState: string }>;
  clients: ArmClients;
}

const key = (rg: string, name: string) => `${rg.toLowerCase()}/${name.toLowerCase()}`;

export function createArmWorld(): ArmWorld {
  const w: ArmWorld = {
    vms: new Map(),
    disks: new Map(),
    snapshots: new Map(),
    diskAccesses: new Map(),
    accounts: new Map(),
    endpoints: new Map(),
    subnets: new Map(),
    nics: new Map(),
    pips: new Map(),
    runCommands: new Map(),
    dnsGroups: new Map(),
    calls: [],
    failNext: new Map(),
    bootPolls: 1,
    stickySas: 0,
    clients: undefined as unknown as ArmClients,
  };
  const boots = new Map<string, number>();
  const call = (what: string, name = '') => {
    w.calls.push(`${what} ${name}`.trim());
  };
  const get = <T>(m: Map<string, T>, rg: string, name: string, type: string): T => {
    const v = m.get(key(rg, name));
    if (!v) throw notFound(type, name);
    return structuredClone(v);
  };

  const compute = {
    virtualMachines: {
      async get(rg: string, name: string, options?: { expand?: string }) {
        call('virtualMachines.get', name);
        const vm = get(w.vms, rg, name, 'Compute/virtualMachines');
        if (options?.expand !== 'instanceView') delete vm.instanceView;
        else {
          const n = (boots.get(name) ?? 0) + 1;
          boots.set(name, n);
          const v = w.vms.get(key(rg, name));
          if (v.provisioningState === 'Creating' && n > w.bootPolls) {
            v.provisioningState = 'Succeeded';
            v.instanceView = { statuses: [{ code: 'ProvisioningState/succeeded', level: 'Info' }, { code: 'PowerState/running', level: 'Info' }], vmAgent: { statuses: [{ code: 'ProvisioningState/succeeded', displayStatus: 'Ready' }] } };
          }
          return structuredClone(v);
        }
        return vm;
      },
      listAll() {
        call('virtualMachines.listAll');
        return paged([...w.vms.values()].map((v) => structuredClone(v)));
      },
      createOrUpdate(rg: string, name: string, params: any) {
        return lro(() => {
          call('virtualMachines.createOrUpdate', name);
          const existing = w.vms.get(key(rg, name));
          const vm = { ...structuredClone(params), id: id(rg, 'Microsoft.Compute', 'virtualMachines', name), name, provisioningState: existing?.provisioningState ?? 'Creating', instanceView: { statuses: [{ code: 'ProvisioningState/creating' }] } };
          w.vms.set(key(rg, name), vm);
          w.disks.set(key(rg, params.storageProfile.osDisk.name), { id: id(rg, 'Microsoft.Compute', 'disks', params.storageProfile.osDisk.name), name: params.storageProfile.osDisk.name, diskSizeGB: 30 });
          return structuredClone(vm);
        });
      },
      async instanceView(rg: string, name: string) {
        return (await compute.virtualMachines.get(rg, name, { expand: 'instanceView' })).instanceView;
      },
      deallocate(rg: string, name: string) {
        return lro(() => {
          call('virtualMachines.deallocate', name);
          const v = w.vms.get(key(rg, name));
          if (!v) throw notFound('Compute/virtualMachines', name);
          v.instanceView = { statuses: [{ code: 'ProvisioningState/succeeded' }, { code: 'PowerState/deallocated' }] };
        });
      },
      delete(rg: string, name: string) {
        return lro(() => {
          call('virtualMachines.delete', name);
          const v = w.vms.get(key(rg, name));
          if (!v) throw notFound('Compute/virtualMachines', name);
          w.vms.delete(key(rg, name));
          // deleteOption Delete: the OS disk and NIC go with the VM.
          const os = v.storageProfile?.osDisk;
          if (os?.deleteOption === 'Delete') w.disks.delete(key(rg, os.name));
          for (const n of v.networkProfile?.networkInterfaces ?? []) if (n.deleteOption === 'Delete') w.nics.delete(key(rg, n.id.split('/').pop()));
        });
      },
    },
    disks: {
      async get(rg: string, name: string) {
        call('disks.get', name);
        return get(w.disks, rg, name, 'Compute/disks');
      },
      delete(rg: string, name: string) {
        return lro(() => {
          call('disks.delete', name);
          if (!w.disks.delete(key(rg, name))) throw notFound('Compute/disks', name);
        });
      },
    },
    snapshots: {
      async get(rg: string, name: string) {
        call('snapshots.get', name);
        return get(w.snapshots, rg, name, 'Compute/snapshots');
      },
      listByResourceGroup(rg: string) {
        call('snapshots.listByResourceGroup');
        // The copy of an incremental snapshot progresses between listings.
        const out = [...w.snapshots.entries()].filter(([k]) => k.startsWith(rg.toLowerCase() + '/')).map(([, s]) => {
          const copy = structuredClone(s);
          if (s.completionPercent < 100) s.completionPercent = 100;
          return copy;
        });
        return paged(out);
      },
      createOrUpdate(rg: string, name: string, snap: any) {
        return lro(() => {
          call('snapshots.createOrUpdate', name);
          const s = { ...structuredClone(snap), id: id(rg, 'Microsoft.Compute', 'snapshots', name), name, provisioningState: 'Succeeded', completionPercent: 0, diskState: 'Unattached', timeCreated: new Date('2024-03-01T02:00:00Z'), diskSizeBytes: w.disks.get(key(RG, snap.creationData.sourceResourceId.split('/').pop()))?.diskSizeGB * 1024 ** 3 || 8 * 1024 ** 3 };
          w.snapshots.set(key(rg, name), s);
          return structuredClone(s);
        });
      },
      delete(rg: string, name: string) {
        return lro(() => {
          call('snapshots.delete', name);
          const s = w.snapshots.get(key(rg, name));
          if (!s) throw notFound('Compute/snapshots', name);
          if (s.diskState === 'ActiveSAS') throw restError(409, 'OperationNotAllowed', `Snapshot ${name} is currently being exported (has active SAS uri). Revoke access first.`);
          w.snapshots.delete(key(rg, name));
        });
      },
      grantAccess(rg: string, name: string, data: any) {
        return lro(() => {
          call('snapshots.grantAccess', name);
          const s = w.snapshots.get(key(rg, name));
          if (!s) throw notFound('Compute/snapshots', name);
          s.diskState = 'ActiveSAS';
          s.grantedSeconds = data.durationInSeconds;
          return { accessSAS: w.sasFor?.(name) ?? `https://md-hdd-x1.z2.blob.storage.azure.net/abcd/${name}?sv=2018-03-28&sr=b&si=x&sig=SECRET` };
        });
      },
      revokeAccess(rg: string, name: string) {
        return lro(() => {
          call('snapshots.revokeAccess', name);
          const s = w.snapshots.get(key(rg, name));
          if (!s) throw notFound('Compute/snapshots', name);
          if (w.stickySas > 0) w.stickySas--;
          else s.diskState = 'Unattached';
        });
      },
    },
    diskAccesses: {
      listByResourceGroup(rg: string) {
        call('diskAccesses.listByResourceGroup');
        return paged([...w.diskAccesses.entries()].filter(([k]) => k.startsWith(rg.toLowerCase() + '/')).map(([, d]) => structuredClone(d)));
      },
      createOrUpdate(rg: string, name: string, da: any) {
        return lro(() => {
          call('diskAccesses.createOrUpdate', name);
          const d = { ...structuredClone(da), id: id(rg, 'Microsoft.Compute', 'diskAccesses', name), name };
          w.diskAccesses.set(key(rg, name), d);
          return structuredClone(d);
        });
      },
    },
    virtualMachineRunCommands: {
      createOrUpdate(rg: string, vm: string, name: string, rc: any) {
        return lro(async () => {
          call('virtualMachineRunCommands.createOrUpdate', vm);
          if (!w.vms.has(key(rg, vm))) throw notFound('Compute/virtualMachines', vm);
          const sha = rc.parameters.find((p: any) => p.name === 'BUNDLE_SHA256')?.value;
          const result = w.runInstall ? await w.runInstall(rc) : { exitCode: 0, output: `tender-installed ${sha}\n`, error: '', executionState: 'Succeeded' };
          // Protected parameters are never returned by the API.
          const stored = { ...structuredClone(rc), protectedParameters: undefined, instanceView: result, provisioningState: 'Succeeded' };
          w.runCommands.set(key(rg, `${vm}/${name}`), { ...stored, sent: structuredClone(rc) });
          return stored;
        });
      },
      async getByVirtualMachine(rg: string, vm: string, name: string) {
        call('virtualMachineRunCommands.getByVirtualMachine', vm);
        const rc = get(w.runCommands, rg, `${vm}/${name}`, 'Compute/virtualMachines/runCommands');
        delete rc.sent;
        return rc;
      },
    },
  };

  const network = {
    subnets: {
      async get(rg: string, vnet: string, subnet: string) {
        call('subnets.get', subnet);
        return get(w.subnets, rg, `${vnet}/${subnet}`, 'Network/virtualNetworks/subnets');
      },
    },
    networkInterfaces: {
      async get(rg: string, name: string) {
        return get(w.nics, rg, name, 'Network/networkInterfaces');
      },
      async beginCreateOrUpdateAndWait(rg: string, name: string, nic: any) {
        call('networkInterfaces.beginCreateOrUpdateAndWait', name);
        const n = { ...structuredClone(nic), id: id(rg, 'Microsoft.Network', 'networkInterfaces', name), name };
        w.nics.set(key(rg, name), n);
        return structuredClone(n);
      },
      async beginDeleteAndWait(rg: string, name: string) {
        call('networkInterfaces.beginDeleteAndWait', name);
        // ARM deletes of absent resources succeed (204).
        w.nics.delete(key(rg, name));
      },
    },
    publicIPAddresses: {
      async beginCreateOrUpdateAndWait(rg: string, name: string, pip: any) {
        call('publicIPAddresses.beginCreateOrUpdateAndWait', name);
        const p = { ...structuredClone(pip), id: id(rg, 'Microsoft.Network', 'publicIPAddresses', name), name };
        w.pips.set(key(rg, name), p);
        return structuredClone(p);
      },
      async beginDeleteAndWait(rg: string, name: string) {
        call('publicIPAddresses.beginDeleteAndWait', name);
        w.pips.delete(key(rg, name));
      },
    },
    privateEndpoints: {
      list(rg: string) {
        call('privateEndpoints.list', rg);
        return paged([...w.endpoints.entries()].filter(([k]) => k.startsWith(rg.toLowerCase() + '/')).map(([, e]) => structuredClone(e)));
      },
      async beginCreateOrUpdateAndWait(rg: string, name: string, pe: any) {
        call('privateEndpoints.beginCreateOrUpdateAndWait', name);
        const e = {
          ...structuredClone(pe),
          id: id(rg, 'Microsoft.Network', 'privateEndpoints', name),
          name,
          provisioningState: 'Succeeded',
          privateLinkServiceConnections: pe.privateLinkServiceConnections.map((c: any) => ({ ...c, privateLinkServiceConnectionState: { status: 'Approved' } })),
        };
        w.endpoints.set(key(rg, name), e);
        return structuredClone(e);
      },
    },
    privateDnsZoneGroups: {
      async beginCreateOrUpdateAndWait(rg: string, pe: string, group: string, params: any) {
        call('privateDnsZoneGroups.beginCreateOrUpdateAndWait', pe);
        w.dnsGroups.set(key(rg, `${pe}/${group}`), structuredClone(params));
        return params;
      },
    },
  };

  const storage = {
    storageAccounts: {
      listByResourceGroup(rg: string) {
        call('storageAccounts.listByResourceGroup');
        return paged([...w.accounts.entries()].filter(([k]) => k.startsWith(rg.toLowerCase() + '/')).map(([, a]) => structuredClone(a)));
      },
      async beginCreateAndWait(rg: string, name: string, params: any) {
        call('storageAccounts.beginCreateAndWait', name);
        const a = { ...structuredClone(params), id: id(rg, 'Microsoft.Storage', 'storageAccounts', name), name, primaryEndpoints: { blob: `https://${name}.blob.core.windows.net/`, queue: `https://${name}.queue.core.windows.net/` } };
        w.accounts.set(key(rg, name), a);
        return structuredClone(a);
      },
      async listKeys(rg: string, name: string) {
        call('storageAccounts.listKeys', name);
        const a = get(w.accounts, rg, name, 'Storage/storageAccounts');
        return { keys: [{ keyName: 'key1', value: a.testKey ?? 'a2V5', permissions: 'FULL' }] };
      },
    },
  };

  // Failure injection wraps every method: a queued error is thrown instead of the call.
  const wrap = (group: string, ops: Record<string, any>) => {
    for (const [m, fn] of Object.entries(ops)) {
      ops[m] = (...args: any[]) => {
        const q = w.failNext.get(`${group}.${m}`);
        const e = q?.shift();
        if (e) {
          w.calls.push(`${group}.${m} ${typeof args[1] === 'string' ? args[1] : ''}`.trim());
          if (/^(list|listAll|listByResourceGroup)$/.test(m)) {
            return (async function* () {
              throw e;
            })();
          }
          return Promise.reject(e);
        }
        return fn(...args);
      };
    }
  };
  for (const [g, ops] of Object.entries({ ...compute, ...network, ...storage })) wrap(g, ops as Record<string, any>);
  w.clients = { compute, network, storage } as unknown as ArmClients;
  return w;
}

/** A protected VM with an OS disk and data disks in resource group `rg-apps`. */
export function addProtectedVm(w: ArmWorld, name: string, opts: { dataDisksGiB?: number[]; tags?: Record<string, string>; location?: string } = {}) {
  const rg = 'rg-apps';
  const osName = `${name}-os`;
  w.disks.set(key(rg, osName), { id: id(rg, 'Microsoft.Compute', 'disks', osName), name: osName, diskSizeGB: 30, diskSizeBytes: 30 * 1024 ** 3 });
  const dataDisks = (opts.dataDisksGiB ?? []).map((g, lun) => {
    const n = `${name}-data${lun}`;
    w.disks.set(key(rg, n), { id: id(rg, 'Microsoft.Compute', 'disks', n), name: n, diskSizeGB: g, diskSizeBytes: g * 1024 ** 3 });
    return { lun, name: n, createOption: 'Attach', managedDisk: { id: id(rg, 'Microsoft.Compute', 'disks', n) } };
  });
  const vm = {
    id: id(rg, 'Microsoft.Compute', 'virtualMachines', name),
    name,
    location: opts.location ?? 'westeurope',
    tags: opts.tags ?? {},
    provisioningState: 'Succeeded',
    storageProfile: { osDisk: { name: osName, managedDisk: { id: id(rg, 'Microsoft.Compute', 'disks', osName) } }, dataDisks },
  };
  w.vms.set(key(rg, name), vm);
  return vm;
}

/** The worker network: a VNET subnet in `rg-net`, optionally the deployment's storage account with approved endpoints. */
export function addWorkerNetwork(w: ArmWorld, opts: { account?: { name: string; blobUrl?: string; queueUrl?: string; key?: string }; endpoints?: Array<'blob' | 'queue'>; region?: string } = {}) {
  const region = opts.region ?? 'westeurope';
  const subnetId = id('rg-net', 'Microsoft.Network', 'virtualNetworks', 'vnet-workers') + '/subnets/workers';
  w.subnets.set(key('rg-net', 'vnet-workers/workers'), { id: subnetId, name: 'workers', addressPrefix: '10.20.1.0/24' });
  let accountId: string | undefined;
  if (opts.account) {
    accountId = id(RG, 'Microsoft.Storage', 'storageAccounts', opts.account.name);
    w.accounts.set(key(RG, opts.account.name), {
      id: accountId,
      name: opts.account.name,
      location: region,
      tags: { 'tender:appliance': 'tender' },
      testKey: opts.account.key,
      primaryEndpoints: { blob: (opts.account.blobUrl ?? `https://${opts.account.name}.blob.core.windows.net`) + '/', queue: (opts.account.queueUrl ?? `https://${opts.account.name}.queue.core.windows.net`) + '/' },
    });
    for (const g of opts.endpoints ?? []) {
      w.endpoints.set(key('rg-net', `pe-${g}`), {
        id: id('rg-net', 'Microsoft.Network', 'privateEndpoints', `pe-${g}`),
        name: `pe-${g}`,
        location: region,
        provisioningState: 'Succeeded',
        subnet: { id: subnetId },
        privateLinkServiceConnections: [{ name: `pe-${g}`, privateLinkServiceId: accountId, groupIds: [g], privateLinkServiceConnectionState: { status: 'Approved' } }],
      });
    }
  }
  return { subnetId, accountId, placement: { subnet: subnetId, securityGroups: [] } };
}
