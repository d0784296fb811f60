/*
 * exec.c — the `exec` agent: a local program answers.
 *
 *   NAME=exec:COMMAND LINE[;env=NAME,NAME][;cwd=DIR][;format=auto|text|jsonl]
 *                         [;kill-grace=MS][;max-reply=BYTES]
 *
 *   uv_spawn (no shell; its own process group; environment = only the
 *   variables env= names; stdin/stdout/stderr are pipes)
 *        │ stdin  <── the request JSON (st->request_json) + "\n", then EOF
 *        │ stdout ──> text: every byte is reply (deltas as they come, UTF-8 cleaned)
 *        │            jsonl: one JSON object a line: {"delta":"..."} | {"error":"..."} |
 *        │                   {"done":true} | {"usage":{"input_tokens","output_tokens"}}
 *        │ stderr ──> the hub's log (warn, per line, capped), its last line kept
 *        ▼ exit ──> 0: the reply is complete; non-zero or a signal: error (with the last stderr line)
 *
 * format=auto (default) decides on the first byte of stdout: '{' means jsonl.
 *
 * The run object outlives the stream: the stream is "detached" when it ends
 * (success, error) or is cancelled, and the run then only waits for its
 * handles to close and for the child to go: a cancelled or failed child gets
 * SIGTERM at once and SIGKILL after kill-grace ms; a child that said "done"
 * gets kill-grace ms to exit by itself, then the same. Signals go to the
 * child's process group (it is spawned detached, so it leads one), which
 * reaches the helpers a script may have started.
 *
 *   ch__exec_run_t:  proc, in, out, err, timer = 5 handles; freed when the last closes
 *     attached (st != NULL) ── end/error/cancel ──> detached (st == NULL) ──> handles closed ──> free
 *     timer: attached: the drain after exit (stdout/stderr not at EOF within 1 s: finish anyway)
 *            detached: the kill escalation (TERM → KILL)
 *
 * Everything runs on the loop given to start (the hub thread's).
 */
#include "agent/exec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/backend.h"
#include "agent/sse_parse.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

#define CH__EXEC_DRAIN_MS 1000       /* after exit, wait this long for stdout/stderr EOF */
#define CH__EXEC_MAX_LINE (1u << 20) /* jsonl: bytes of one line */
#define CH__EXEC_ERR_LINE 1000       /* stderr: bytes of a logged line */
#define CH__EXEC_ERR_LINES 100       /* stderr: lines logged per run */

enum { CH__FMT_AUTO = 0, CH__FMT_TEXT, CH__FMT_JSONL };

typedef struct {
  char **argv;        /* owned, NULL-terminated */
  char **env;         /* owned, NULL-terminated "NAME=value" (empty: no environment at all) */
  char *cwd;          /* owned or NULL */
  int format;
  uint64_t grace_ms;  /* SIGTERM → SIGKILL */
  size_t max_reply;   /* bytes */
} ch__exec_cfg_t;

typedef struct {
  ch_agent_stream_t *st;  /* NULL once detached */
  ch_agent_t *agent;      /* not owned; outlives the run (agents are disposed after the loop ended) */
  char sid[37];           /* the stream id, for the log */
  uv_process_t proc;
  uv_pipe_t in, out, err;
  uv_timer_t timer;
  uv_write_t wr;
  char *req;              /* owned: the bytes written to stdin */
  unsigned open;          /* handles not closed yet */
  int exited, out_eof, err_eof;
  int kill_level;         /* 0: nothing sent, 1: SIGTERM sent, 2: SIGKILL sent */
  int64_t exit_status;
  int term_signal;
  int format;             /* resolved from the config (auto: on the first byte) */
  ch_buf_t line;          /* jsonl: the unfinished line */
  char carry[4];          /* text: an incomplete UTF-8 sequence at the end of the last read */
  size_t ncarry;
  ch_buf_t errline;       /* stderr: the unfinished line */
  unsigned err_logged;
  char last_err[201];     /* the last non-empty stderr line */
  ch_agent_be_out_t out_text;
  char out_buf[65536];
  char err_buf[4096];
} ch__exec_run_t;

static const char *const ch__exec_opts[] = {"env", "cwd", "format", "kill-grace", "max-reply", NULL};

/* ---- the command line ------------------------------------------------------------- */

void ch_agent_exec_argv_free(char **argv) {
  for (size_t i = 0; argv && argv[i]; i++) free(argv[i]);
  free(argv);
}

int ch_agent_exec_split(const char *line, char ***argv_out, size_t *argc_out) {
  char **argv = NULL;
  size_t argc = 0;
  ch_buf_t w = CH_BUF_INIT;
  int rc = CH_EINVAL;
  const char *p = line;
  *argv_out = NULL;
  *argc_out = 0;
  for (;;) {
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0') break;
    w.len = 0;
    while (*p != '\0' && *p != ' ' && *p != '\t') {
      if (*p == '\'') {
        const char *q = strchr(p + 1, '\'');
        if (q == NULL) goto Exit;
        ch_buf_append(&w, p + 1, (size_t)(q - p - 1));
        p = q + 1;
      } else if (*p == '"') {
        p++;
        while (*p != '"') {
          if (*p == '\0') goto Exit;
          if (*p == '\\' && (p[1] == '"' || p[1] == '\\')) p++;
          ch_buf_append_byte(&w, *p++);
        }
        p++;
      } else if (*p == '\\') {
        if (p[1] == '\0') goto Exit;
        ch_buf_append_byte(&w, p[1]);
        p += 2;
      } else {
        ch_buf_append_byte(&w, *p++);
      }
    }
    argv = ch_xrealloc(argv, (argc + 2) * sizeof(char *));
    argv[argc++] = ch_xstrndup(w.base ? w.base : "", w.len);
    argv[argc] = NULL;
  }
  if (argc == 0) goto Exit;
  *argv_out = argv;
  *argc_out = argc;
  argv = NULL;
  rc = 0;
Exit:
  ch_agent_exec_argv_free(argv);
  ch_buf_dispose(&w);
  return rc;
}

/* ---- configuration ----------------------------------------------------------------- */

static void ch__exec_cfg_free(ch__exec_cfg_t *c) {
  if (c == NULL) return;
  ch_agent_exec_argv_free(c->argv);
  ch_agent_exec_argv_free(c->env);
  free(c->cwd);
  free(c);
}

static void ch__exec_dispose(ch_agent_t *a) {
  ch__exec_cfg_t *c = a->be_state;
  ch__exec_cfg_free(c);
  a->be_state = NULL;
}

/* env=NAME,NAME: the named variables of the hub's environment (absent ones are skipped). */
static int ch__exec_env(ch_agent_t *a, const char *spec, char ***out, ch_buf_t *err) {
  size_t n = 0;
  char **env = ch_xcalloc(1, sizeof(char *));
  const char *p = spec ? spec : "";
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > 0) {
      char *name = ch_xstrndup(p, len);
      if (strchr(name, '=') != NULL) {
        ch_buf_printf(err, "agent '%s': env= takes variable names separated by commas, not '%s'\n", a->name, name);
        free(name);
        ch_agent_exec_argv_free(env);
        return CH_ECONFIG;
      }
      const char *v = getenv(name);
      if (v != NULL) {
        ch_buf_t b = CH_BUF_INIT;
        ch_buf_printf(&b, "%s=%s", name, v);
        env = ch_xrealloc(env, (n + 2) * sizeof(char *));
        env[n++] = ch_xstrndup(b.base, b.len);
        env[n] = NULL;
        ch_buf_dispose(&b);
      }
      free(name);
    }
    p += len;
    if (*p == ',') p++;
  }
  *out = env;
  return 0;
}

static int ch__exec_init(ch_agent_t *a, ch_buf_t *err) {
  if (ch_agent_be_opts_check(a, ch__exec_opts, err) != 0) return CH_ECONFIG;
  ch__exec_cfg_t *c = ch_xcalloc(1, sizeof(*c));
  size_t argc;
  uint64_t grace = 2000, max_reply = CH_AGENT_BE_MAX_REPLY_DEFAULT;
  if (ch_agent_exec_split(a->arg, &c->argv, &argc) != 0) {
    ch_buf_printf(err, "agent '%s': exec needs a command line (quotes closed): %s=exec:PROGRAM ARGS...\n", a->name,
                  a->name);
    goto Fail;
  }
  if (strchr(c->argv[0], '/') != NULL && access(c->argv[0], X_OK) != 0) {
    ch_buf_printf(err, "agent '%s': %s: %s\n", a->name, c->argv[0], strerror(errno));
    goto Fail;
  }
  if (ch_agent_be_opt_u64(a, "kill-grace", 0, 60000, &grace, err) != 0 ||
      ch_agent_be_opt_u64(a, "max-reply", 1, (uint64_t)1 << 30, &max_reply, err) != 0)
    goto Fail;
  c->grace_ms = grace;
  c->max_reply = (size_t)max_reply;
  const char *f = ch_agent_opt(a, "format");
  if (f == NULL || strcmp(f, "auto") == 0) c->format = CH__FMT_AUTO;
  else if (strcmp(f, "text") == 0) c->format = CH__FMT_TEXT;
  else if (strcmp(f, "jsonl") == 0) c->format = CH__FMT_JSONL;
  else {
    ch_buf_printf(err, "agent '%s': format must be auto, text or jsonl, not '%s'\n", a->name, f);
    goto Fail;
  }
  const char *cwd = ch_agent_opt(a, "cwd");
  if (cwd) {
    struct stat sb;
    if (stat(cwd, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      ch_buf_printf(err, "agent '%s': cwd '%s' is not a directory\n", a->name, cwd);
      goto Fail;
    }
    c->cwd = ch_xstrdup(cwd);
  }
  if (ch__exec_env(a, ch_agent_opt(a, "env"), &c->env, err) != 0) goto Fail;
  a->be_state = c;
  return 0;
Fail:
  ch__exec_cfg_free(c);
  return CH_ECONFIG;
}

/* ---- the run's handles --------------------------------------------------------------- */

static void ch__exec_free(ch__exec_run_t *r) {
  free(r->req);
  ch_buf_dispose(&r->line);
  ch_buf_dispose(&r->errline);
  ch_agent_be_out_dispose(&r->out_text);
  free(r);
}

static void ch__exec_closed(uv_handle_t *h) {
  ch__exec_run_t *r = h->data;
  if (--r->open == 0) ch__exec_free(r);
}

static void ch__exec_close(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, ch__exec_closed);
}

static void ch__exec_signal(ch__exec_run_t *r, int sig) {
  if (r->exited) return;
  if (kill(-r->proc.pid, sig) != 0) uv_process_kill(&r->proc, sig);
}

static void ch__exec_timer_cb(uv_timer_t *t);

/* The stream is over for us (success, error or cancel): let go of st, close
 * the pipes, and see the child out. `now`: signal it at once, else
 * after the grace period. */
static void ch__exec_detach(ch__exec_run_t *r, int now) {
  ch_agent_stream_t *st = r->st;
  const ch__exec_cfg_t *c = r->agent->be_state;
  r->st = NULL;
  st->be_data = NULL;
  ch__exec_close((uv_handle_t *)&r->in);
  ch__exec_close((uv_handle_t *)&r->out);
  ch__exec_close((uv_handle_t *)&r->err);
  if (r->exited) {
    ch__exec_close((uv_handle_t *)&r->timer);
    return;
  }
  if (now) {
    ch__exec_signal(r, SIGTERM);
    r->kill_level = 1;
  }
  uv_timer_start(&r->timer, ch__exec_timer_cb, c->grace_ms, 0);
}

/* End the stream: detach first (st is freed by the end), then report. */
static void ch__exec_end(ch__exec_run_t *r, const char *err) {
  ch_agent_stream_t *st = r->st;
  if (st == NULL) return;
  ch__exec_detach(r, err != NULL);
  ch_agent_stream_end(st, err);
}

static void ch__exec_fail_long(ch__exec_run_t *r) {
  char why[96];
  snprintf(why, sizeof(why), "reply longer than %zu bytes", r->out_text.max);
  ch__exec_end(r, why);
}

/* ---- stdout ------------------------------------------------------------------------- */

static void ch__exec_jsonl_line(ch__exec_run_t *r, const char *p, size_t n) {
  while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
  if (i == n) return; /* a blank line */
  cJSON *j = cJSON_ParseWithLength(p, n);
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    ch__exec_end(r, "agent process wrote a line that is not a JSON object");
    return;
  }
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delta");
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "usage");
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
  const cJSON *done = cJSON_GetObjectItemCaseSensitive(j, "done");
  if (!d && !u && !e && !done) { /* never a silent empty reply (say, text that happened to be JSON) */
    ch__exec_end(r, "agent process wrote a JSON line without delta, error, done or usage (use format=text "
                    "for a plain-text reply)");
  } else if (cJSON_IsString(d) && ch_agent_be_emit(r->st, &r->out_text, d->valuestring, strlen(d->valuestring), 1, NULL)) {
    ch__exec_fail_long(r);
  } else if (e && !cJSON_IsNull(e) && !cJSON_IsFalse(e)) {
    ch_buf_t b = CH_BUF_INIT;
    const char *t = cJSON_IsString(e) && e->valuestring[0] ? e->valuestring : "the agent reported an error";
    size_t len = strlen(t) > 500 ? 500 : strlen(t);
    ch_agent_utf8_clean(&b, t, len, 1);
    ch__exec_end(r, ch_buf_cstr(&b));
    ch_buf_dispose(&b);
  } else {
    if (cJSON_IsObject(u)) {
      const cJSON *in = cJSON_GetObjectItemCaseSensitive(u, "input_tokens");
      const cJSON *out = cJSON_GetObjectItemCaseSensitive(u, "output_tokens");
      ch_agent_be_count(in, &r->st->tokens_in);
      ch_agent_be_count(out, &r->st->tokens_out);
    }
    if (cJSON_IsTrue(done)) ch__exec_end(r, NULL);
  }
  cJSON_Delete(j);
}

static void ch__exec_jsonl(ch__exec_run_t *r, const char *p, size_t n) {
  const char *end = p + n;
  while (p < end && r->st) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t k = (size_t)((nl ? nl : end) - p);
    if (r->line.len + k > CH__EXEC_MAX_LINE) {
      char why[96];
      snprintf(why, sizeof(why), "agent process wrote a line longer than %u bytes", CH__EXEC_MAX_LINE);
      ch__exec_end(r, why);
      return;
    }
    if (nl == NULL) {
      ch_buf_append(&r->line, p, k);
      return;
    }
    if (r->line.len) {
      ch_buf_append(&r->line, p, k);
      ch__exec_jsonl_line(r, r->line.base, r->line.len);
      r->line.len = 0;
    } else {
      ch__exec_jsonl_line(r, p, k);
    }
    p = nl + 1;
  }
}

static void ch__exec_text(ch__exec_run_t *r, const char *p, size_t n, int final) {
  ch_buf_t tmp = CH_BUF_INIT;
  if (r->ncarry) {
    ch_buf_append(&tmp, r->carry, r->ncarry);
    ch_buf_append(&tmp, p, n);
    p = tmp.base;
    n = tmp.len;
  }
  size_t used = 0;
  if (ch_agent_be_emit(r->st, &r->out_text, p, n, final, &used) != 0) {
    ch_buf_dispose(&tmp);
    ch__exec_fail_long(r);
    return;
  }
  r->ncarry = n - used; /* at most 3 */
  memcpy(r->carry, p + used, r->ncarry);
  ch_buf_dispose(&tmp);
}

static void ch__exec_stdout(ch__exec_run_t *r, const char *p, size_t n) {
  if (r->format == CH__FMT_AUTO) r->format = p[0] == '{' ? CH__FMT_JSONL : CH__FMT_TEXT;
  if (r->format == CH__FMT_JSONL) ch__exec_jsonl(r, p, n);
  else ch__exec_text(r, p, n, 0);
}

/* stdout is over: what is left is the last of the reply. */
static void ch__exec_flush(ch__exec_run_t *r) {
  if (r->st == NULL) return;
  if (r->format == CH__FMT_JSONL && r->line.len) {
    ch__exec_jsonl_line(r, r->line.base, r->line.len);
    r->line.len = 0;
  } else if (r->format != CH__FMT_JSONL && r->ncarry) {
    ch__exec_text(r, "", 0, 1);
  }
}

/* The child is gone and its output read (or the drain expired): the verdict. */
static void ch__exec_finish(ch__exec_run_t *r) {
  ch__exec_flush(r);
  if (r->st == NULL) return;
  char why[320];
  if (r->term_signal) {
    snprintf(why, sizeof(why), "agent process killed by signal %d%s%s", r->term_signal, r->last_err[0] ? ": " : "",
             r->last_err);
    ch__exec_end(r, why);
  } else if (r->exit_status != 0) {
    snprintf(why, sizeof(why), "agent process exited with status %lld%s%s", (long long)r->exit_status,
             r->last_err[0] ? ": " : "", r->last_err);
    ch__exec_end(r, why);
  } else {
    ch__exec_end(r, NULL);
  }
}

static void ch__exec_maybe_finish(ch__exec_run_t *r) {
  if (r->st && r->exited && r->out_eof && r->err_eof) ch__exec_finish(r);
}

static void ch__exec_alloc_out(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  ch__exec_run_t *r = h->data;
  (void)hint;
  *buf = uv_buf_init(r->out_buf, sizeof(r->out_buf));
}

static void ch__exec_alloc_err(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  ch__exec_run_t *r = h->data;
  (void)hint;
  *buf = uv_buf_init(r->err_buf, sizeof(r->err_buf));
}

static void ch__exec_read_out(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ch__exec_run_t *r = s->data;
  if (nread > 0 && r->st) ch__exec_stdout(r, buf->base, (size_t)nread);
  if (nread < 0) {
    r->out_eof = 1;
    ch__exec_close((uv_handle_t *)&r->out);
    ch__exec_flush(r);
    ch__exec_maybe_finish(r);
  }
}

/* ---- stderr ---------------------------------------------------------------------------- */

static void ch__exec_err_line(ch__exec_run_t *r, const char *p, size_t n) {
  while (n > 0 && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
  if (n == 0) return;
  ch_buf_t b = CH_BUF_INIT;
  ch_agent_utf8_clean(&b, p, n, 1);
  for (size_t i = 0; i < b.len; i++)
    if ((unsigned char)b.base[i] < 0x20) b.base[i] = ' ';
  size_t k = b.len < sizeof(r->last_err) - 1 ? b.len : sizeof(r->last_err) - 1;
  while (k > 0 && k < b.len && ((unsigned char)b.base[k] & 0xC0) == 0x80) k--;
  memcpy(r->last_err, b.base, k);
  r->last_err[k] = '\0';
  if (r->err_logged < CH__EXEC_ERR_LINES)
    ch_log_warn("agent '%s' stream %s stderr: %s", r->agent->name, r->sid, ch_buf_cstr(&b));
  else if (r->err_logged == CH__EXEC_ERR_LINES)
    ch_log_warn("agent '%s' stream %s: more stderr output, not logged", r->agent->name, r->sid);
  r->err_logged++;
  ch_buf_dispose(&b);
}

static void ch__exec_read_err(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ch__exec_run_t *r = s->data;
  const char *p = buf->base, *end = p + (nread > 0 ? nread : 0);
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t k = (size_t)((nl ? nl : end) - p);
    size_t room = CH__EXEC_ERR_LINE - r->errline.len;
    ch_buf_append(&r->errline, p, k < room ? k : room); /* a longer line is cut */
    p += k;
    if (nl) {
      ch__exec_err_line(r, r->errline.base, r->errline.len);
      r->errline.len = 0;
      p++;
    }
  }
  if (nread < 0) {
    if (r->errline.len) ch__exec_err_line(r, r->errline.base, r->errline.len);
    r->errline.len = 0;
    r->err_eof = 1;
    ch__exec_close((uv_handle_t *)&r->err);
    ch__exec_maybe_finish(r);
  }
}

/* ---- the process ------------------------------------------------------------------------ */

static void ch__exec_written(uv_write_t *w, int status) {
  ch__exec_run_t *r = w->data;
  if (status < 0 && status != UV_ECANCELED)
    ch_log_debug("agent '%s' stream %s: request not fully written: %s", r->agent->name, r->sid, uv_strerror(status));
  ch__exec_close((uv_handle_t *)&r->in); /* EOF for the child */
}

static void ch__exec_exit(uv_process_t *p, int64_t status, int sig) {
  ch__exec_run_t *r = p->data;
  r->exited = 1;
  r->exit_status = status;
  r->term_signal = sig;
  ch__exec_close((uv_handle_t *)&r->proc);
  if (r->st == NULL) { /* detached: the kill timer is of no use any more */
    ch__exec_close((uv_handle_t *)&r->timer);
    return;
  }
  if (r->out_eof && r->err_eof) ch__exec_finish(r);
  else uv_timer_start(&r->timer, ch__exec_timer_cb, CH__EXEC_DRAIN_MS, 0);
}

static void ch__exec_timer_cb(uv_timer_t *t) {
  ch__exec_run_t *r = t->data;
  if (r->st) { /* the drain after exit expired (a grandchild holds the pipes?) */
    ch__exec_finish(r);
    return;
  }
  if (r->exited) return;
  const ch__exec_cfg_t *c = r->agent->be_state;
  if (r->kill_level == 0) {
    ch__exec_signal(r, SIGTERM);
    r->kill_level = 1;
    uv_timer_start(&r->timer, ch__exec_timer_cb, c->grace_ms, 0);
  } else if (r->kill_level == 1) {
    ch_log_warn("agent '%s' stream %s: the process ignored SIGTERM for %llu ms: SIGKILL", r->agent->name, r->sid,
                (unsigned long long)c->grace_ms);
    ch__exec_signal(r, SIGKILL);
    r->kill_level = 2;
  }
}

static int ch__exec_start(ch_agent_stream_t *st, uv_loop_t *loop) {
  const ch__exec_cfg_t *c = st->agent->be_state;
  ch__exec_run_t *r = ch_xcalloc(1, sizeof(*r));
  r->st = st;
  r->agent = st->agent;
  memcpy(r->sid, st->id, sizeof(r->sid));
  r->format = c->format;
  ch_buf_init(&r->line);
  ch_buf_init(&r->errline);
  ch_agent_be_out_init(&r->out_text, c->max_reply);
  uv_pipe_init(loop, &r->in, 0);
  uv_pipe_init(loop, &r->out, 0);
  uv_pipe_init(loop, &r->err, 0);
  uv_timer_init(loop, &r->timer);
  r->in.data = r->out.data = r->err.data = r->timer.data = r->proc.data = r->wr.data = r;
  r->open = 5; /* in, out, err, timer, and the process handle (to be closed even when the spawn fails) */
  uv_stdio_container_t io[3];
  io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  io[0].data.stream = (uv_stream_t *)&r->in;
  io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[1].data.stream = (uv_stream_t *)&r->out;
  io[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[2].data.stream = (uv_stream_t *)&r->err;
  uv_process_options_t o;
  memset(&o, 0, sizeof(o));
  o.exit_cb = ch__exec_exit;
  o.file = c->argv[0];
  o.args = c->argv;
  o.env = c->env;
  o.cwd = c->cwd;
  o.flags = UV_PROCESS_DETACHED;
  o.stdio = io;
  o.stdio_count = 3;
  int rc = uv_spawn(loop, &r->proc, &o);
  if (rc != 0) {
    ch_log_warn("agent '%s': cannot run %s: %s", r->agent->name, c->argv[0], uv_strerror(rc));
    r->st = NULL;
    r->exited = 1;
    ch__exec_close((uv_handle_t *)&r->proc);
    ch__exec_close((uv_handle_t *)&r->in);
    ch__exec_close((uv_handle_t *)&r->out);
    ch__exec_close((uv_handle_t *)&r->err);
    ch__exec_close((uv_handle_t *)&r->timer);
    return rc == UV_ENOENT ? CH_ENOTFOUND : rc == UV_EACCES ? CH_EPERM : CH_EIO;
  }
  st->be_data = r;
  uv_read_start((uv_stream_t *)&r->out, ch__exec_alloc_out, ch__exec_read_out);
  uv_read_start((uv_stream_t *)&r->err, ch__exec_alloc_err, ch__exec_read_err);
  size_t n = strlen(st->request_json);
  r->req = ch_xmalloc(n + 1);
  memcpy(r->req, st->request_json, n);
  r->req[n] = '\n';
  uv_buf_t b = uv_buf_init(r->req, (unsigned)(n + 1));
  if (uv_write(&r->wr, (uv_stream_t *)&r->in, &b, 1, ch__exec_written) != 0) ch__exec_close((uv_handle_t *)&r->in);
  return 0;
}

static void ch__exec_cancel(ch_agent_stream_t *st) {
  ch__exec_run_t *r = st->be_data;
  if (r == NULL || r->st == NULL) return;
  ch__exec_detach(r, 1);
}

const ch_agent_backend_t ch_agent_backend_exec = {
    .kind = "exec",
    .init = ch__exec_init,
    .dispose = ch__exec_dispose,
    .start = ch__exec_start,
    .cancel = ch__exec_cancel,
};
