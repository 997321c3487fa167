/**
 * The environment a workload's program (or, for an image, runc) starts with. The host controls
 * the agent's environment, so what it passes on is filtered.
 */
import { FILES_ENV, expandFilesToken } from './files.js';

/**
 * Environment variables that change how the program is loaded: never inherited from the host.
 * Besides the dynamic loader's, those with which a runtime or shell loads code of the host's
 * choosing at start (a Java agent, a script `bash -c` sources first, module search paths,
 * glibc's iconv modules).
 */
const HOST_ENV_DENY =
  /^(LD_|DYLD_|NODE_OPTIONS$|NODE_PATH$|PYTHONPATH$|PYTHONSTARTUP$|PYTHONHOME$|PERL5OPT$|PERL5LIB$|PERLLIB$|RUBYOPT$|RUBYLIB$|JAVA_TOOL_OPTIONS$|_JAVA_OPTIONS$|JDK_JAVA_OPTIONS$|BASH_ENV$|GCONV_PATH$|CLOISTER_)/;

/**
 * The host's environment without the variables that load code: what runc gets for an image
 * workload (runc is the measured program there), and what a program's environment starts from.
 */
export function hostEnv(inherited: NodeJS.ProcessEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(inherited)) {
    // The host controls the container's environment: a variable like LD_PRELOAD would load
    // code of its choosing into the attested program.
    if (v !== undefined && !HOST_ENV_DENY.test(k)) env[k] = v;
  }
  return env;
}

/** The program's environment: the host's (minus loader variables), then the bundle's. */
export function programEnv(
  inherited: NodeJS.ProcessEnv,
  bundleEnv: Readonly<Record<string, string>>,
  root: string,
): Record<string, string> {
  const env = hostEnv(inherited);
  for (const [k, v] of Object.entries(bundleEnv)) env[k] = expandFilesToken(v, root);
  env[FILES_ENV] = root;
  return env;
}
