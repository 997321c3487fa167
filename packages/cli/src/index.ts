export { main, buildProgram } from './main.js';
export type { CommandContext, RegisterCommands } from './main.js';
export { CLI_ERRORS } from './error-codes.js';
