/* cmds.h — the subcommands dispatched by main.c (one src/cmd_<name>.c each). */
#ifndef LPVIT_CMDS_H
#define LPVIT_CMDS_H

int cmd_eval(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_create_model(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_cache(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_sweep(int argc, char **argv);

#endif
