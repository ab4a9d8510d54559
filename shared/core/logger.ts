// One structured logger with correlation keys (execution, vm, worker).
// Adapters for Lambda (JSON lines to stdout), Azure (context.log) and the CLI
// implement the same interface; tests pass a memory logger.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose every line carries these keys too. */
  child(fields: LogFields): Logger;
}

const order: Record<LogLevel | 'silent', number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/** Keys whose values never reach a log line, whatever logs them. */
const SECRET_KEY = /(passphrase|password|secret|token|sas|signature|credential|sig|key(?!s?$|Id|Name))/i;

export function redact(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (SECRET_KEY.test(k) && typeof v === 'string') out[k] = '[redacted]';
    else if (typeof v === 'string' && /[?&](sig|X-Amz-Signature|signature)=/i.test(v)) out[k] = v.replace(/\?.*$/, '?[redacted]');
    else out[k] = v;
  }
  return out;
}

export function createJsonLogger(
  opts: { level?: LogLevel | 'silent'; write?: (line: string) => void; base?: LogFields } = {},
): Logger {
  const level = opts.level ?? ((process.env.TENDER_LOG_LEVEL as LogLevel | 'silent' | undefined) ?? 'info');
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const base = opts.base ?? {};
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (order[lvl] < (order[level] ?? 20)) return;
    write(JSON.stringify({ level: lvl, time: new Date().toISOString(), msg, ...redact({ ...base, ...fields }) }));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createJsonLogger({ level, write, base: { ...base, ...fields } }),
  };
}

/** Keeps every line in memory: for tests and for the local runner's summary. */
export function createMemoryLogger(base: LogFields = {}, lines: Array<{ level: LogLevel; msg: string } & LogFields> = []) {
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => lines.push({ level, msg, ...redact({ ...base, ...fields }) });
  const logger: Logger & { lines: typeof lines } = {
    lines,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createMemoryLogger({ ...base, ...fields }, lines),
  };
  return logger;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};
