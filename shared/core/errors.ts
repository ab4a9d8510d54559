// Named errors are the contract with the state machine: ASL Retry/Catch and the
// Durable orchestrator match on `name`, so a name, once shipped, never changes.
// Every error says whether retrying can help; messages say what went wrong and
// what to do.

export interface TenderErrorOptions {
  cause?: unknown;
}

export abstract class TenderError extends Error {
  abstract readonly retryable: boolean;
  constructor(message: string, options: TenderErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
  }
}

/** Bad configuration or input: fix the input, retrying cannot help. */
export class ConfigError extends TenderError {
  readonly retryable = false;
}

/** The input of a step did not match its schema. */
export class ValidationError extends TenderError {
  readonly retryable = false;
}

/** Something the run needs does not exist (VM, disk, snapshot, restore point, repository). */
export class NotFoundError extends TenderError {
  readonly retryable = false;
}

/** The cloud (or a server) asked us to slow down, or failed transiently (5xx, timeout). */
export class TransientError extends TenderError {
  readonly retryable = true;
}

/** A resource is not in the state needed yet (snapshot pending, worker booting). Poll again. */
export class NotReadyError extends TenderError {
  readonly retryable = true;
}

/** Not enough capacity for the worker's instance type / VM size right now. */
export class CapacityError extends TenderError {
  readonly retryable = true;
}

/** Permission denied: the run must fail, never "succeed" having backed up nothing. */
export class AccessDeniedError extends TenderError {
  readonly retryable = false;
}

/** A snapshot went into an error state. */
export class SnapshotFailedError extends TenderError {
  readonly retryable = false;
}

/** The worker failed, died or stopped reporting. */
export class WorkerFailedError extends TenderError {
  readonly retryable = false;
}

/** The worker bundle did not match its digest, or could not be fetched. */
export class BundleIntegrityError extends TenderError {
  readonly retryable = false;
}

/** The private-network preflight found something a worker would be missing. */
export class NetworkPreflightError extends TenderError {
  readonly retryable = false;
}

/** Repository-level problems: wrong key, corrupt object (named), locked for maintenance. */
export class RepositoryError extends TenderError {
  readonly retryable = false;
}
export class WrongPassphraseError extends TenderError {
  readonly retryable = false;
}
export class CorruptObjectError extends TenderError {
  readonly retryable = false;
  constructor(
    readonly objectKey: string,
    message: string,
    options: TenderErrorOptions = {},
  ) {
    super(`${objectKey}: ${message}`, options);
  }
}
export class LockedError extends TenderError {
  readonly retryable = true;
}

/** A polled resource (snapshot, worker, job) did not get ready before its deadline. */
export class TimedOutError extends TenderError {
  readonly retryable = false;
}

/** Names of the errors the state machine retries (kept next to the classes so they cannot drift). */
export const RETRYABLE_ERROR_NAMES = ['TransientError', 'NotReadyError', 'CapacityError', 'LockedError'] as const;

/** Normalise anything thrown into an Error before using it (strings, objects, undefined). */
export function toError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'string') return new Error(thrown);
  try {
    return new Error(JSON.stringify(thrown));
  } catch {
    return new Error(String(thrown));
  }
}

export function isRetryable(thrown: unknown): boolean {
  const err = toError(thrown) as Partial<TenderError>;
  return err.retryable === true;
}

/**
 * For actions that must each be tried whatever happens to the others (revoking grants): collect
 * failures with `attempt`, then `throwIfAny` throws the one failure as it was, or — when several
 * failed — a TransientError naming them all (the first retryable one's cause), so the caller's
 * retry runs the whole set again. Only when none of them is retryable does the first one's name
 * (what a state machine matches) win.
 */
export function failureCollector() {
  const failures: Array<{ what: string; error: Error }> = [];
  return {
    async attempt<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
      try {
        return await fn();
      } catch (e) {
        failures.push({ what, error: toError(e) });
        return undefined;
      }
    },
    throwIfAny(summary: string): void {
      if (failures.length === 0) return;
      if (failures.length === 1) throw failures[0]!.error;
      const list = failures.map((f) => `${f.what}: ${f.error.message}`).join('; ');
      const retryable = failures.find((f) => isRetryable(f.error));
      if (retryable) throw new TransientError(`${summary} (${failures.length} failed: ${list})`, { cause: retryable.error });
      const first = failures[0]!.error;
      first.message = `${summary} (${failures.length} failed: ${list})`;
      throw first;
    },
  };
}
