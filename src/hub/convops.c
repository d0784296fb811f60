/*
 * convops.c — conversation and project operations (see convops.h).
 *
 * One request type serves every operation: the loop-side entry point parses
 * and validates its input into owned fields of a ch__cop_t, then either
 * rejects it (posted to the loop, so the caller is never re-entered) or
 * submits it with the operation's run function. run executes on the hub
 * thread inside the batch transaction, writes the answer JSON into `out` or
 * an error (status, code, err), and queues the broadcasts; done hands the
 * outcome to the caller's callback on its loop after the commit.
 *
 *   entry (loop) ── validate ──┬─ bad ──> ch_loop_post(reject_task) ──> cb(error)
 *                              └─ ok  ──> ch_hub_submit ──> run (hub) ──> done (loop) ──> cb
 *
 * Ownership: every string field of a request is owned by it and freed by
 * ch__cop_free (the hub's free_cb); `out` is disposed there too.
 */
#include "hub/convops.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/err.h"
#include "hub/bcast.h"
#include "hub/client.h"
#include "hub/hub.h"
#include "hub/ops.h"
#include "hub/presence.h"

#define CH__ID_MAX 128        /* conversation / project ids, bytes */
#define CH__TITLE_MAX 1024    /* conversation title, bytes */
#define CH__NAME_MAX 256      /* project name, bytes */
#define CH__SEARCH_MAX 256    /* search query, bytes */
#define CH__MEMBERS_MAX 1000  /* members in one request */
#define CH__PAGE_DEFAULT 100  /* list / page size when 0 */
#define CH__PAGE_MAX 1000     /* largest list / page */

typedef struct ch__cop_s ch__cop_t;

struct ch__cop_s {
  ch_hub_req_t base;
  ch_hub_json_cb cb;            /* the caller's; called once */
  void *ud;                     /* the caller's; not owned */
  char user[CH_AUTH_ID_MAX + 1];/* acting user ("" for unauthenticated internals) */
  unsigned scopes;              /* CH_SCOPE_* of the acting credential */
  const char *code;             /* static error code, NULL on success */
  ch_buf_t out;                 /* the answer JSON */
  /* inputs, each owned (NULL = absent) */
  char *id, *project_id, *title, *agent, *metadata, *search, *doc;
  size_t doclen;
  char **members;               /* owned array of owned user ids */
  size_t nmembers;
  int has_members;              /* members was given (update: replace the list) */
  int with_messages, tail;
  uint64_t after;
  size_t limit, offset;
  char why[112];                /* validation message (loop side) */
};

/* ---- request life cycle ------------------------------------------------------ */

static void ch__cop_free(ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  free(q->id);
  free(q->project_id);
  free(q->title);
  free(q->agent);
  free(q->metadata);
  free(q->search);
  free(q->doc);
  for (size_t i = 0; i < q->nmembers; i++) free(q->members[i]);
  free(q->members);
  ch_buf_dispose(&q->out);
  free(q);
}

static void ch__cop_done(ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  if (r->status != 0) {
    q->cb(q->ud, r->status, q->code ? q->code : "store_error",
          r->err.len ? ch_buf_cstr(&r->err) : "the store failed", NULL, 0);
    return;
  }
  if (q->out.len == 0) ch_buf_append_str(&q->out, "{}");
  q->cb(q->ud, 0, NULL, NULL, ch_buf_cstr(&q->out), q->out.len);
}

static ch__cop_t *ch__cop_new(ch_loop_t *l, const char *user, unsigned scopes,
                              void (*run)(ch_hub_t *, ch_hub_req_t *), ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch_xcalloc(1, sizeof(*q));
  q->base.run = run;
  q->base.done = ch__cop_done;
  q->base.free_cb = ch__cop_free;
  q->base.loop = l;
  q->cb = cb;
  q->ud = ud;
  snprintf(q->user, sizeof(q->user), "%s", user ? user : "");
  q->scopes = scopes;
  return q;
}

/* Record an error (hub thread inside run, or the loop before submitting). */
static void ch__fail(ch__cop_t *q, int status, const char *code, const char *msg) {
  q->base.status = status;
  q->code = code;
  q->base.err.len = 0;
  ch_buf_append_str(&q->base.err, msg);
}

static void ch__cop_reject_task(ch_loop_t *l, void *arg) {
  ch__cop_t *q = arg;
  ch__cop_done(&q->base);
  ch_buf_dispose(&q->base.err);
  ch__cop_free(&q->base);
}

/* Answer q with an error on its loop's next turn (never re-enters the caller). */
static void ch__cop_reject(ch__cop_t *q, int status, const char *code, const char *msg) {
  ch__fail(q, status, code, msg);
  ch_loop_post(q->base.loop, ch__cop_reject_task, q);
}

/* Submit, or reject when the credential lacks `need`. */
static void ch__cop_submit(ch__cop_t *q, unsigned need) {
  if (!ch_auth_scopes_allow(q->scopes, need)) {
    ch__cop_reject(q, CH_EPERM, "forbidden",
                   need & CH_SCOPE_WRITE ? "this credential may not write" : "this credential may not read");
    return;
  }
  ch_hub_submit(ch_hub, &q->base);
}

/* ---- input parsing (loop) ------------------------------------------------------ */

static int ch__id_ok(const char *s) {
  size_t n = s ? strlen(s) : 0;
  return n > 0 && n <= CH__ID_MAX;
}

/* An optional string member: absent or null -> *out NULL; a string of
 * min..max bytes -> owned copy; anything else -> the error text (in q->why). */
static const char *ch__opt_str(ch__cop_t *q, cJSON *o, const char *k, size_t min, size_t max, char **out) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  *out = NULL;
  if (v == NULL || cJSON_IsNull(v)) return NULL;
  size_t n = cJSON_IsString(v) && v->valuestring ? strlen(v->valuestring) : 0;
  if (!cJSON_IsString(v) || n < min || n > max) {
    snprintf(q->why, sizeof(q->why), "\"%s\" must be a string of %zu..%zu bytes", k, min, max);
    return q->why;
  }
  *out = ch_xstrdup(v->valuestring);
  return NULL;
}

/* Parse a body (len 0 = {}) into *out, or return the error text. */
static const char *ch__parse_body(const char *body, size_t len, cJSON **out) {
  *out = len == 0 ? cJSON_CreateObject() : cJSON_ParseWithLength(body, len);
  if (!cJSON_IsObject(*out)) {
    cJSON_Delete(*out);
    *out = NULL;
    return "the body must be a JSON object";
  }
  return NULL;
}

/* The conversation fields shared by create and update. */
static const char *ch__parse_conv_fields(ch__cop_t *q, cJSON *o) {
  const char *bad;
  if ((bad = ch__opt_str(q, o, "projectId", 1, CH__ID_MAX, &q->project_id))) return bad;
  if ((bad = ch__opt_str(q, o, "title", 0, CH__TITLE_MAX, &q->title))) return bad;
  if ((bad = ch__opt_str(q, o, "agent", 1, CH__ID_MAX, &q->agent))) return bad;
  cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
  if (md && !cJSON_IsNull(md)) {
    if (!cJSON_IsObject(md)) return "\"metadata\" must be an object";
    char *t = cJSON_PrintUnformatted(md);
    q->metadata = ch_xstrdup(t);
    cJSON_free(t);
  }
  cJSON *mem = cJSON_GetObjectItemCaseSensitive(o, "members");
  if (mem && !cJSON_IsNull(mem)) {
    if (!cJSON_IsArray(mem)) return "\"members\" must be an array of user ids";
    int n = cJSON_GetArraySize(mem);
    if (n > CH__MEMBERS_MAX) return "too many members";
    q->has_members = 1;
    q->members = n ? ch_xcalloc((size_t)n, sizeof(*q->members)) : NULL;
    cJSON *m;
    cJSON_ArrayForEach(m, mem) {
      if (!cJSON_IsString(m) || !ch_auth_id_valid(m->valuestring))
        return "\"members\" must be an array of user ids (1..128 bytes of A-Z a-z 0-9 . _ @ : -)";
      q->members[q->nmembers++] = ch_xstrdup(m->valuestring);
    }
  }
  return NULL;
}

/* ---- JSON rendering (hub thread) ------------------------------------------------ */

static void ch__iso(ch_buf_t *b, int64_t ms) {
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ms, ts);
  ch_buf_append_byte(b, '"');
  ch_buf_append_str(b, ts);
  ch_buf_append_byte(b, '"');
}

static void ch__opt_qstr(ch_buf_t *b, const char *s) {
  if (s) ch_buf_append_json_qstr(b, s);
  else ch_buf_append_str(b, "null");
}

/* The conversation object without its closing brace (callers may add fields). */
static void ch__conv_json_open(ch_buf_t *b, const ch_conv_t *cv) {
  ch_buf_append_str(b, "{\"id\":");
  ch_buf_append_json_qstr(b, cv->id ? cv->id : "");
  ch_buf_append_str(b, ",\"projectId\":");
  ch__opt_qstr(b, cv->project_id);
  ch_buf_append_str(b, ",\"title\":");
  ch__opt_qstr(b, cv->title);
  ch_buf_append_str(b, ",\"owner\":");
  ch__opt_qstr(b, cv->owner);
  ch_buf_append_str(b, ",\"agent\":");
  ch__opt_qstr(b, cv->agent);
  ch_buf_append_str(b, ",\"members\":[");
  for (size_t i = 0; i < cv->nmembers; i++) {
    if (i) ch_buf_append_byte(b, ',');
    ch_buf_append_json_qstr(b, cv->members[i]);
  }
  ch_buf_append_str(b, "],\"metadata\":");
  ch_buf_append_str(b, cv->metadata && cv->metadata[0] == '{' ? cv->metadata : "{}");
  ch_buf_append_str(b, ",\"createdAt\":");
  ch__iso(b, cv->created_ms);
  ch_buf_append_str(b, ",\"updatedAt\":");
  ch__iso(b, cv->updated_ms);
  ch_buf_printf(b, ",\"lastSeq\":%llu,\"messageCount\":%llu,\"epoch\":", (unsigned long long)cv->last_seq,
                (unsigned long long)cv->message_count);
  ch__opt_qstr(b, cv->epoch);
}

void ch_hub_conv_json(ch_buf_t *b, const ch_conv_t *cv) {
  ch__conv_json_open(b, cv);
  ch_buf_append_byte(b, '}');
}

void ch_hub_project_json(ch_buf_t *b, const ch_project_t *p) {
  ch_buf_append_str(b, "{\"id\":");
  ch_buf_append_json_qstr(b, p->id ? p->id : "");
  ch_buf_append_str(b, ",\"name\":");
  ch__opt_qstr(b, p->name);
  ch_buf_append_str(b, ",\"owner\":");
  ch__opt_qstr(b, p->owner);
  ch_buf_append_str(b, ",\"createdAt\":");
  ch__iso(b, p->created_ms);
  ch_buf_append_byte(b, '}');
}

/* ---- access and broadcasts (hub thread) ----------------------------------------- */

static int ch__is_admin(const ch__cop_t *q) { return (q->scopes & CH_SCOPE_ADMIN) != 0; }

static int ch__is_owner(const ch__cop_t *q, const ch_conv_t *cv) {
  return ch__is_admin(q) || (cv->owner && strcmp(cv->owner, q->user) == 0);
}

static int ch__has(char *const *a, size_t n, const char *s) {
  for (size_t i = 0; i < n; i++)
    if (a[i] && strcmp(a[i], s) == 0) return 1;
  return 0;
}

/* Read conversation id into *cv and check access. 0, or an error recorded in q. */
static int ch__conv_load(ch_hub_t *h, ch__cop_t *q, const char *id, ch_conv_t *cv) {
  ch_store_t *st = h->store;
  int rc = st->ops->conv_get(st, id, cv);
  if (rc == CH_ENOTFOUND) {
    ch__fail(q, CH_ENOTFOUND, "not_found", "conversation not found");
    return rc;
  }
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not read the conversation");
    return rc;
  }
  if (!ch_hub_may_access(cv, q->user, q->scopes)) {
    ch__fail(q, CH_EPERM, "forbidden", "not a member of this conversation");
    return CH_EPERM;
  }
  return 0;
}

/* The project a conversation is put into must exist and be the user's (admin: any). */
static int ch__project_check(ch_hub_t *h, ch__cop_t *q, const char *project_id) {
  ch_store_t *st = h->store;
  ch_project_t pj;
  memset(&pj, 0, sizeof(pj));
  int rc = st->ops->project_get(st, project_id, &pj);
  if (rc == CH_ENOTFOUND) {
    ch__fail(q, CH_EINVAL, "invalid", "\"projectId\" names no project");
  } else if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not read the project");
  } else if (!ch__is_admin(q) && !(pj.owner && strcmp(pj.owner, q->user) == 0)) {
    ch__fail(q, CH_EPERM, "forbidden", "not the owner of this project");
    rc = CH_EPERM;
  }
  ch_project_dispose(&pj);
  return rc;
}

static void ch__publish_doc(ch_hub_t *h, const char *type, const char *resource, const char *prefix,
                            const char *id, const ch_buf_t *doc) {
  char topic[160];
  snprintf(topic, sizeof(topic), "%s%s", prefix, id);
  ch_bcast_t *b = ch_bcast_new(type, resource, id, 0, ch_chunk_from(doc->base, doc->len));
  ch_hub_publish(h, topic, b);
}

/* {"type":"conversation","op":op,...} to p:<project> (and old_project when it
 * differs), u:<member> for every member and every user in extra, and c:<id>
 * when to_conv. */
static void ch__conv_publish(ch_hub_t *h, const char *op, const ch_conv_t *cv, int to_conv,
                             const char *old_project, char *const *extra, size_t nextra) {
  ch_buf_t doc = CH_BUF_INIT;
  char ts[CH_ISO8601_LEN + 1];
  ch_clock_iso8601(ch_clock_wall_ms(), ts);
  ch_buf_printf(&doc, "{\"type\":\"conversation\",\"op\":\"%s\",\"conversationId\":", op);
  ch_buf_append_json_qstr(&doc, cv->id);
  ch_buf_append_str(&doc, ",\"conversation\":");
  ch_hub_conv_json(&doc, cv);
  ch_buf_printf(&doc, ",\"timestamp\":\"%s\"}", ts);
  if (cv->project_id) ch__publish_doc(h, "conversation", "project", "p:", cv->project_id, &doc);
  if (old_project && !(cv->project_id && strcmp(old_project, cv->project_id) == 0))
    ch__publish_doc(h, "conversation", "project", "p:", old_project, &doc);
  for (size_t i = 0; i < cv->nmembers; i++) ch__publish_doc(h, "conversation", "user", "u:", cv->members[i], &doc);
  for (size_t i = 0; i < nextra; i++)
    if (extra[i] && !ch__has(cv->members, cv->nmembers, extra[i]))
      ch__publish_doc(h, "conversation", "user", "u:", extra[i], &doc);
  if (to_conv) ch__publish_doc(h, "conversation", "chat", "c:", cv->id, &doc);
  ch_buf_dispose(&doc);
}

/* ---- create ------------------------------------------------------------------------ */

static void ch__create_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  char key[160];
  snprintf(key, sizeof(key), "c:%s", q->id);
  int rc = st->ops->conv_get(st, q->id, &cv);
  if (rc == 0) {
    ch__fail(q, CH_EEXIST, "exists", "a conversation with this id exists");
    goto Exit;
  }
  if (rc != CH_ENOTFOUND) {
    ch__fail(q, rc, "store_error", "could not read the conversation");
    goto Exit;
  }
  const char *claim = ch_presence_claim(h, key);
  if (claim && strcmp(claim, q->user) != 0 && !ch__is_admin(q)) {
    ch__fail(q, CH_EPERM, "forbidden", "conversation id in use by another user");
    goto Exit;
  }
  if (q->project_id && ch__project_check(h, q, q->project_id) != 0) goto Exit;
  ch_conv_t in = {.id = q->id, .project_id = q->project_id, .title = q->title, .owner = q->user,
                  .agent = q->agent, .metadata = q->metadata};
  int created = 0;
  rc = st->ops->conv_put(st, &in, &created);
  for (size_t i = 0; rc == 0 && i < q->nmembers; i++)
    if (strcmp(q->members[i], q->user) != 0) rc = st->ops->member_set(st, q->id, q->members[i], "member");
  if (rc == 0) rc = st->ops->conv_get(st, q->id, &cv);
  if (rc != 0) {
    if (created) st->ops->conv_delete(st, q->id); /* no half-made conversation (members missing) */
    ch__fail(q, rc, rc == CH_EINVAL ? "invalid" : "store_error", "could not create the conversation");
    goto Exit;
  }
  if (claim) ch_presence_set_claim(h, key, NULL); /* it exists now */
  ch_hub_conv_json(&q->out, &cv);
  ch__conv_publish(h, "created", &cv, 0, NULL, NULL, 0);
Exit:
  ch_conv_dispose(&cv);
}

void ch_hub_conv_create(ch_loop_t *l, const char *user, unsigned scopes, const char *body_json, size_t len,
                        ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__create_run, cb, ud);
  cJSON *o = NULL;
  const char *bad = ch__parse_body(body_json, len, &o);
  if (!bad) bad = ch__opt_str(q, o, "id", 1, CH__ID_MAX, &q->id);
  if (!bad) bad = ch__parse_conv_fields(q, o);
  cJSON_Delete(o);
  if (bad) {
    ch__cop_reject(q, CH_EINVAL, "invalid", bad);
    return;
  }
  if (q->id == NULL) {
    char uuid[37];
    ch_uuid4(uuid);
    q->id = ch_xstrdup(uuid);
  }
  ch__cop_submit(q, CH_SCOPE_WRITE);
}

/* ---- get / list ------------------------------------------------------------------------ */

static void ch__get_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  ch_event_t *evs = NULL;
  size_t n = 0;
  if (ch__conv_load(h, q, q->id, &cv) != 0) goto Exit;
  if (q->with_messages) {
    int rc = st->ops->events(st, q->id, 0, ch_client_settings.sync_cap, 1, &evs, &n);
    if (rc != 0) {
      ch__fail(q, rc, "store_error", "could not read the history");
      goto Exit;
    }
  }
  ch__conv_json_open(&q->out, &cv);
  if (q->with_messages) {
    ch_buf_append_str(&q->out, ",\"messages\":[");
    for (size_t i = 0; i < n; i++) {
      if (i) ch_buf_append_byte(&q->out, ',');
      ch_hub_event_json(&q->out, &evs[i]);
    }
    ch_buf_append_byte(&q->out, ']');
  }
  ch_buf_append_byte(&q->out, '}');
Exit:
  ch_store_events_free(evs, n);
  ch_conv_dispose(&cv);
}

void ch_hub_conv_get(ch_loop_t *l, const char *user, unsigned scopes, const char *id, int with_messages,
                     ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__get_run, cb, ud);
  q->with_messages = with_messages;
  if (!ch__id_ok(id)) {
    ch__cop_reject(q, CH_EINVAL, "invalid", "a conversation id has 1..128 bytes");
    return;
  }
  q->id = ch_xstrdup(id);
  ch__cop_submit(q, CH_SCOPE_READ);
}

static void ch__list_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_conv_t *a = NULL;
  size_t n = 0;
  ch_conv_query_t cq = {.user_id = ch__is_admin(q) ? NULL : q->user, .project_id = q->project_id,
                        .search = q->search, .limit = q->limit, .offset = q->offset};
  int rc = st->ops->conv_list(st, &cq, &a, &n);
  if (rc == CH_EINVAL) {
    ch__fail(q, rc, "invalid", "the search query is not valid");
    return;
  }
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not list conversations");
    return;
  }
  ch_buf_append_byte(&q->out, '[');
  for (size_t i = 0; i < n; i++) {
    if (i) ch_buf_append_byte(&q->out, ',');
    ch_hub_conv_json(&q->out, &a[i]);
  }
  ch_buf_append_byte(&q->out, ']');
  ch_store_convs_free(a, n);
}

void ch_hub_conv_list(ch_loop_t *l, const char *user, unsigned scopes, const char *project_id,
                      const char *search, size_t limit, size_t offset, ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__list_run, cb, ud);
  q->limit = limit == 0 ? CH__PAGE_DEFAULT : limit > CH__PAGE_MAX ? CH__PAGE_MAX : limit;
  q->offset = offset;
  if (project_id && *project_id) {
    if (!ch__id_ok(project_id)) {
      ch__cop_reject(q, CH_EINVAL, "invalid", "a project id has 1..128 bytes");
      return;
    }
    q->project_id = ch_xstrdup(project_id);
  }
  if (search && *search) {
    if (strlen(search) > CH__SEARCH_MAX) {
      ch__cop_reject(q, CH_EINVAL, "invalid", "the search query is too long (256 bytes at most)");
      return;
    }
    q->search = ch_xstrdup(search);
  }
  ch__cop_submit(q, CH_SCOPE_READ);
}

/* ---- update ------------------------------------------------------------------------ */

static void ch__update_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_conv_t cv, nv;
  memset(&cv, 0, sizeof(cv));
  memset(&nv, 0, sizeof(nv));
  char **removed = NULL;
  size_t nremoved = 0;
  if (ch__conv_load(h, q, q->id, &cv) != 0) goto Exit;
  if (q->has_members && !ch__is_owner(q, &cv)) {
    ch__fail(q, CH_EPERM, "forbidden", "only the owner may change the members");
    goto Exit;
  }
  if (q->project_id && !(cv.project_id && strcmp(cv.project_id, q->project_id) == 0) &&
      ch__project_check(h, q, q->project_id) != 0)
    goto Exit;
  ch_conv_t in = {.id = q->id, .project_id = q->project_id, .title = q->title, .agent = q->agent,
                  .metadata = q->metadata};
  int rc = st->ops->conv_put(st, &in, NULL);
  if (rc == 0 && q->has_members) {
    removed = cv.nmembers ? ch_xcalloc(cv.nmembers, sizeof(*removed)) : NULL;
    for (size_t i = 0; rc == 0 && i < cv.nmembers; i++) {
      const char *m = cv.members[i];
      if ((cv.owner && strcmp(m, cv.owner) == 0) || ch__has(q->members, q->nmembers, m)) continue;
      rc = st->ops->member_set(st, q->id, m, NULL);
      removed[nremoved++] = cv.members[i];
    }
    for (size_t i = 0; rc == 0 && i < q->nmembers; i++) {
      const char *m = q->members[i];
      if ((cv.owner && strcmp(m, cv.owner) == 0) || ch__has(cv.members, cv.nmembers, m)) continue;
      rc = st->ops->member_set(st, q->id, m, "member");
    }
  }
  if (rc == 0) rc = st->ops->conv_get(st, q->id, &nv);
  if (rc != 0) {
    ch__fail(q, rc, rc == CH_EINVAL ? "invalid" : "store_error", "could not update the conversation");
    goto Exit;
  }
  ch_hub_conv_json(&q->out, &nv);
  ch__conv_publish(h, "updated", &nv, 1, cv.project_id, removed, nremoved);
Exit:
  free(removed); /* borrowed strings of cv */
  ch_conv_dispose(&nv);
  ch_conv_dispose(&cv);
}

void ch_hub_conv_update(ch_loop_t *l, const char *user, unsigned scopes, const char *id, const char *body_json,
                        size_t len, ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__update_run, cb, ud);
  cJSON *o = NULL;
  const char *bad = ch__id_ok(id) ? NULL : "a conversation id has 1..128 bytes";
  if (!bad) bad = ch__parse_body(body_json, len, &o);
  if (!bad && cJSON_GetObjectItemCaseSensitive(o, "id") &&
      !(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "id")) &&
        strcmp(cJSON_GetObjectItemCaseSensitive(o, "id")->valuestring, id) == 0))
    bad = "a conversation's id cannot change";
  if (!bad) bad = ch__parse_conv_fields(q, o);
  cJSON_Delete(o);
  if (bad) {
    ch__cop_reject(q, CH_EINVAL, "invalid", bad);
    return;
  }
  q->id = ch_xstrdup(id);
  ch__cop_submit(q, CH_SCOPE_WRITE);
}

/* ---- delete ------------------------------------------------------------------------ */

static void ch__delete_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  if (ch__conv_load(h, q, q->id, &cv) != 0) goto Exit;
  if (!ch__is_owner(q, &cv)) {
    ch__fail(q, CH_EPERM, "forbidden", "only the owner may delete the conversation");
    goto Exit;
  }
  int rc = st->ops->conv_delete(st, q->id);
  if (rc != 0) {
    ch__fail(q, rc, rc == CH_ENOTFOUND ? "not_found" : "store_error", "could not delete the conversation");
    goto Exit;
  }
  /* Connections still joined keep listening on the id: it stays the owner's
   * (a join claim, hub/presence.h) so another user cannot re-create it under them. */
  char key[160];
  snprintf(key, sizeof(key), "c:%s", q->id);
  ch_presence_set_claim(h, key, cv.owner);
  ch_hub_conv_json(&q->out, &cv);
  ch__conv_publish(h, "deleted", &cv, 1, NULL, NULL, 0);
Exit:
  ch_conv_dispose(&cv);
}

void ch_hub_conv_delete(ch_loop_t *l, const char *user, unsigned scopes, const char *id, ch_hub_json_cb cb,
                        void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__delete_run, cb, ud);
  if (!ch__id_ok(id)) {
    ch__cop_reject(q, CH_EINVAL, "invalid", "a conversation id has 1..128 bytes");
    return;
  }
  q->id = ch_xstrdup(id);
  ch__cop_submit(q, CH_SCOPE_WRITE);
}

/* ---- events page ---------------------------------------------------------------------- */

static void ch__page_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  ch_event_t *evs = NULL;
  size_t n = 0;
  if (ch__conv_load(h, q, q->id, &cv) != 0) goto Exit;
  int rc = st->ops->events(st, q->id, q->after, q->limit, q->tail, &evs, &n);
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not read the history");
    goto Exit;
  }
  int more;
  if (q->tail) more = n > 0 && evs[0].seq > q->after + 1;
  else more = n > 0 ? evs[n - 1].seq < cv.last_seq : 0;
  ch_buf_t *b = &q->out;
  ch_buf_append_str(b, "{\"conversationId\":");
  ch_buf_append_json_qstr(b, q->id);
  ch_buf_printf(b, ",\"lastSeq\":%llu,\"epoch\":", (unsigned long long)cv.last_seq);
  ch__opt_qstr(b, cv.epoch);
  ch_buf_append_str(b, ",\"messages\":[");
  for (size_t i = 0; i < n; i++) {
    if (i) ch_buf_append_byte(b, ',');
    ch_hub_event_json(b, &evs[i]);
  }
  ch_buf_printf(b, "],\"hasMore\":%s}", more ? "true" : "false");
Exit:
  ch_store_events_free(evs, n);
  ch_conv_dispose(&cv);
}

void ch_hub_events_page(ch_loop_t *l, const char *user, unsigned scopes, const char *conv, uint64_t after,
                        size_t limit, int tail, ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__page_run, cb, ud);
  q->after = after;
  q->limit = limit == 0 ? CH__PAGE_DEFAULT : limit > CH__PAGE_MAX ? CH__PAGE_MAX : limit;
  q->tail = tail != 0;
  if (!ch__id_ok(conv)) {
    ch__cop_reject(q, CH_EINVAL, "invalid", "a conversation id has 1..128 bytes");
    return;
  }
  q->id = ch_xstrdup(conv);
  ch__cop_submit(q, CH_SCOPE_READ);
}

/* ---- projects ------------------------------------------------------------------------ */

static void ch__project_create_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_project_t pj;
  memset(&pj, 0, sizeof(pj));
  int rc = st->ops->project_get(st, q->id, &pj);
  if (rc == 0) {
    ch__fail(q, CH_EEXIST, "exists", "a project with this id exists");
    goto Exit;
  }
  if (rc != CH_ENOTFOUND) {
    ch__fail(q, rc, "store_error", "could not read the project");
    goto Exit;
  }
  ch_project_t in = {.id = q->id, .name = q->title ? q->title : q->id, .owner = q->user};
  int created = 0;
  rc = st->ops->project_put(st, &in, &created);
  if (rc == 0) rc = st->ops->project_get(st, q->id, &pj);
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not create the project");
    goto Exit;
  }
  ch_hub_project_json(&q->out, &pj);
Exit:
  ch_project_dispose(&pj);
}

void ch_hub_project_create(ch_loop_t *l, const char *user, unsigned scopes, const char *body_json, size_t len,
                           ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__project_create_run, cb, ud);
  cJSON *o = NULL;
  const char *bad = ch__parse_body(body_json, len, &o);
  if (!bad) bad = ch__opt_str(q, o, "id", 1, CH__ID_MAX, &q->id);
  if (!bad) bad = ch__opt_str(q, o, "name", 1, CH__NAME_MAX, &q->title); /* the name travels in title */
  cJSON_Delete(o);
  if (bad) {
    ch__cop_reject(q, CH_EINVAL, "invalid", bad);
    return;
  }
  if (q->id == NULL) {
    char uuid[37];
    ch_uuid4(uuid);
    q->id = ch_xstrdup(uuid);
  }
  ch__cop_submit(q, CH_SCOPE_WRITE);
}

static void ch__project_list_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_project_t *a = NULL;
  size_t n = 0;
  int rc = st->ops->project_list(st, ch__is_admin(q) ? NULL : q->user, &a, &n);
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not list projects");
    return;
  }
  ch_buf_append_byte(&q->out, '[');
  for (size_t i = 0; i < n; i++) {
    if (i) ch_buf_append_byte(&q->out, ',');
    ch_hub_project_json(&q->out, &a[i]);
    ch_project_dispose(&a[i]);
  }
  ch_buf_append_byte(&q->out, ']');
  free(a);
}

void ch_hub_project_list(ch_loop_t *l, const char *user, unsigned scopes, ch_hub_json_cb cb, void *ud) {
  ch__cop_submit(ch__cop_new(l, user, scopes, ch__project_list_run, cb, ud), CH_SCOPE_READ);
}

static void ch__project_get_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  ch_project_t pj;
  memset(&pj, 0, sizeof(pj));
  int rc = st->ops->project_get(st, q->id, &pj);
  if (rc == CH_ENOTFOUND) {
    ch__fail(q, rc, "not_found", "project not found");
    return;
  }
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not read the project");
    return;
  }
  if (!ch__is_admin(q) && !(pj.owner && strcmp(pj.owner, q->user) == 0))
    ch__fail(q, CH_EPERM, "forbidden", "not the owner of this project");
  else
    ch_hub_project_json(&q->out, &pj);
  ch_project_dispose(&pj);
}

void ch_hub_project_get(ch_loop_t *l, const char *user, unsigned scopes, const char *id, ch_hub_json_cb cb,
                        void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__project_get_run, cb, ud);
  if (!ch__id_ok(id)) {
    ch__cop_reject(q, CH_EINVAL, "invalid", "a project id has 1..128 bytes");
    return;
  }
  q->id = ch_xstrdup(id);
  ch__cop_submit(q, CH_SCOPE_READ);
}

/* ---- ephemeral events ------------------------------------------------------------------ */

static void ch__publish_event_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_conv_t cv;
  memset(&cv, 0, sizeof(cv));
  if (ch__conv_load(h, q, q->id, &cv) == 0) {
    char key[160];
    snprintf(key, sizeof(key), "c:%s", q->id);
    size_t n = ch_presence_count(h, key);
    ch_bcast_t *b = ch_bcast_new("event", "chat", q->id, 0, ch_chunk_from(q->doc, q->doclen));
    ch_hub_publish(h, key, b);
    ch_buf_printf(&q->out, "{\"delivered\":%zu}", n);
  }
  ch_conv_dispose(&cv);
}

void ch_hub_conv_publish_event(ch_loop_t *l, const char *user, unsigned scopes, const char *conv,
                               const char *doc, size_t len, ch_hub_json_cb cb, void *ud) {
  ch__cop_t *q = ch__cop_new(l, user, scopes, ch__publish_event_run, cb, ud);
  if (!ch__id_ok(conv)) {
    ch__cop_reject(q, CH_EINVAL, "invalid", "a conversation id has 1..128 bytes");
    return;
  }
  q->id = ch_xstrdup(conv);
  q->doc = ch_xmemdup(doc, len);
  q->doclen = len;
  ch__cop_submit(q, CH_SCOPE_WRITE);
}

static void ch__user_publish_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  char key[160];
  snprintf(key, sizeof(key), "u:%s", q->id);
  size_t n = ch_presence_count(h, key);
  ch_bcast_t *b = ch_bcast_new("user", "user", q->id, 0, ch_chunk_from(q->doc, q->doclen));
  ch_hub_publish(h, key, b);
  ch_buf_printf(&q->out, "{\"delivered\":%zu}", n);
}

void ch_hub_user_publish(ch_loop_t *l, const char *target, const char *doc, size_t len, ch_hub_json_cb cb,
                         void *ud) {
  ch__cop_t *q = ch__cop_new(l, NULL, 0, ch__user_publish_run, cb, ud);
  if (!ch_auth_id_valid(target)) {
    ch__cop_reject(q, CH_EINVAL, "invalid", "not a valid user id");
    return;
  }
  q->id = ch_xstrdup(target);
  q->doc = ch_xmemdup(doc, len);
  q->doclen = len;
  ch_hub_submit(ch_hub, &q->base);
}

/* ---- stats ------------------------------------------------------------------------ */

static void ch__stats_run(ch_hub_t *h, ch_hub_req_t *r) {
  ch__cop_t *q = (ch__cop_t *)r;
  ch_store_t *st = h->store;
  size_t rooms = 0;
  const char *k;
  size_t kl;
  void *v;
  for (size_t it = 0; ch_map_next(&h->presence, &it, &k, &kl, &v);)
    if (kl > 2 && k[0] == 'c' && k[1] == ':' && ch_presence_count(h, k) > 0) rooms++;
  uint64_t convs = 0, msgs = 0;
  int rc = st->ops->counts(st, &convs, &msgs);
  if (rc != 0) {
    ch__fail(q, rc, "store_error", "could not count");
    return;
  }
  ch_buf_printf(&q->out, "{\"activeRooms\":%zu,\"totalConversations\":%llu,\"totalMessages\":%llu}", rooms,
                (unsigned long long)convs, (unsigned long long)msgs);
}

void ch_hub_stats_counts(ch_loop_t *l, ch_hub_json_cb cb, void *ud) {
  ch_hub_submit(ch_hub, &ch__cop_new(l, NULL, 0, ch__stats_run, cb, ud)->base);
}
