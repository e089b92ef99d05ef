/* bench_util: see bench_util.h. */
#include "bench_util.h"

#include "kafka/kafka_int.h"

#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <rill/rill.h>
#include <rill/testkit.h>

#include "bench_commit.h" /* BENCH_COMMIT, generated at build time (CMakeLists.txt) */

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double bench_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct timespec bench_realtime_in_ms(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

void bench_sort(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
}

double bench_median(double *v, int n)
{
    bench_sort(v, (size_t)n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The "model name" of /proc/cpuinfo's first processor, "unknown" without. */
static void cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && colon) {
            colon += strspn(colon + 1, " \t") + 1;
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(out, size, "%s", colon);
            break;
        }
    }
    fclose(f);
}

void bench_header(const char *name, int kafka, int argc, char **argv)
{
    char model[256], date[64], args[1024] = "";
    cpu_model(model, sizeof(model));
    struct utsname u;
    if (uname(&u))
        memset(&u, 0, sizeof(u));
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
    size_t used = 0;
    for (int i = 1; i < argc && used < sizeof(args) - 1; i++)
        used +=
            (size_t)snprintf(args + used, sizeof(args) - used, "%s%s", i > 1 ? " " : "", argv[i]);
    printf("bench-info bench: %s\n", name);
    printf("bench-info commit: %s\n", BENCH_COMMIT);
    if (kafka)
        printf("bench-info librdkafka: %s\n", rd_kafka_version_str());
    printf("bench-info machine: %ld cpus, %s, %s %s, host %s\n", sysconf(_SC_NPROCESSORS_ONLN),
           model, u.sysname, u.release, u.nodename);
    printf("bench-info date: %s\n", date);
    /* How busy the machine was: the benches share 2 cores with others. */
    char load[64] = "unknown";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        double l1, l5, l15;
        if (fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) == 3)
            snprintf(load, sizeof(load), "%.2f %.2f %.2f", l1, l5, l15);
        fclose(f);
    }
    printf("bench-info load: %s\n", load);
    printf("bench-info args: %s\n", used ? args : "(defaults)");
    fflush(stdout);
}

/* The q-quantile (0..1) of sorted s[0..n), linearly interpolated. */
static double quantile(const double *s, int n, double q)
{
    double at = q * (n - 1);
    int lo = (int)at;
    return lo + 1 < n ? s[lo] + (s[lo + 1] - s[lo]) * (at - lo) : s[lo];
}

bench_stats_t bench_stats(const double *v, int n)
{
    double s[64];
    bench_stats_t r = {.n = n};
    if (n < 1)
        return r;
    if (n > (int)(sizeof(s) / sizeof(*s)))
        n = r.n = (int)(sizeof(s) / sizeof(*s));
    memcpy(s, v, (size_t)n * sizeof(*s));
    bench_sort(s, (size_t)n);
    r.median = quantile(s, n, 0.5);
    r.min = s[0];
    r.max = s[n - 1];
    r.q1 = quantile(s, n, 0.25);
    r.q3 = quantile(s, n, 0.75);
    return r;
}

/* Per-run ratios (or differences, diff nonzero) of rill over baseline. */
static bench_stats_t per_run(const double *rill, const double *base, int runs, int diff)
{
    double v[64];
    int n = runs < 64 ? runs : 64;
    for (int i = 0; i < n; i++)
        v[i] = diff ? rill[i] - base[i] : (base[i] != 0 ? rill[i] / base[i] : 0);
    return bench_stats(v, n);
}

static void spread_line(const char *name, int decimals, bench_stats_t r, bench_stats_t b,
                        bench_stats_t pr, int diff, const char *unit)
{
    printf("spread %s: rill %.*f..%.*f (iqr %.*f..%.*f) baseline %.*f..%.*f (iqr %.*f..%.*f) %s, ",
           name, decimals, r.min, decimals, r.max, decimals, r.q1, decimals, r.q3, decimals, b.min,
           decimals, b.max, decimals, b.q1, decimals, b.q3, unit);
    if (diff)
        printf("diff per run %.*f..%.*f median %.*f %s, %d runs\n", decimals, pr.min, decimals,
               pr.max, decimals, pr.median, unit, r.n);
    else
        printf("ratio per run %.2f..%.2f median %.2f, %d runs\n", pr.min, pr.max, pr.median, r.n);
    fflush(stdout);
}

void bench_summary(const char *name, int decimals, const double *rill, const double *base, int runs,
                   const char *unit)
{
    bench_stats_t r = bench_stats(rill, runs), b = bench_stats(base, runs);
    bench_line_ratio(name, decimals, r.median, b.median, unit,
                     b.median != 0 ? r.median / b.median : 0);
    spread_line(name, decimals, r, b, per_run(rill, base, runs, 0), 0, unit);
}

void bench_line_diff(const char *name, int decimals, double rill, double base, const char *unit)
{
    printf("bench %s: rill %.*f %s baseline %.*f %s diff %.*f %s\n", name, decimals, rill, unit,
           decimals, base, unit, decimals, rill - base, unit);
    fflush(stdout);
}

void bench_overhead(const char *name, int decimals, const double *rill, const double *base,
                    int runs, const char *unit)
{
    bench_stats_t r = bench_stats(rill, runs), b = bench_stats(base, runs);
    bench_line_diff(name, decimals, r.median, b.median, unit);
    spread_line(name, decimals, r, b, per_run(rill, base, runs, 1), 1, unit);
}

void bench_line_ratio(const char *name, int decimals, double rill, double base, const char *unit,
                      double ratio)
{
    printf("bench %s: rill %.*f %s baseline %.*f %s ratio %.2f\n", name, decimals, rill, unit,
           decimals, base, unit, ratio);
    fflush(stdout);
}

void bench_line(const char *name, int decimals, double rill, double base, const char *unit)
{
    bench_line_ratio(name, decimals, rill, base, unit, rill / base);
}

int bench_env_int(const char *var, int dflt)
{
    const char *v = getenv(var);
    return v ? atoi(v) : dflt;
}

void bench_conf_from_env(const char *name, void *conf, const char *var, bench_conf_set_fn *set)
{
    const char *v = getenv(var);
    if (!v)
        return;
    char buf[1024], err[512];
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            fprintf(stderr, "%s: %s: %s\n", name, var, "expected key=value[,key=value]");
            exit(1);
        }
        *eq = '\0';
        if (set(conf, kv, eq + 1, err, sizeof(err))) {
            fprintf(stderr, "%s: %s: %s\n", name, var, err);
            exit(1);
        }
    }
}

void bench_thread_cpu(const char *when)
{
    char line[4096] = "";
    size_t used = 0;
    /* The threads there are (readdir), not every id that might be one: a
     * probe of 100,000 ids cost ~160 ms of CPU per call. */
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    while (d && (de = readdir(d)) && used < sizeof(line) - 64) {
        int tid = atoi(de->d_name);
        if (tid <= 0)
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        if (!open || !close ||
            sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
            continue;
        *close = '\0';
        used += (size_t)snprintf(line + used, sizeof(line) - used, " %s/%d=%lu", open + 1, tid,
                                 (ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
    }
    if (d)
        closedir(d);
    fprintf(stderr, "  threads %s:%s\n", when, line);
}

/* ---- actor flows ---- */

void bench_flow_init(bench_flow_t *f, uint64_t total)
{
    atomic_init(&f->done, 0);
    f->total = total;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->finished = 0;
}

void bench_flow_finish(bench_flow_t *f)
{
    f->t_end = bench_now_s();
    pthread_mutex_lock(&f->lock);
    f->finished = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

void bench_flow_wait(bench_flow_t *f)
{
    pthread_mutex_lock(&f->lock);
    while (!f->finished)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
}

rill_err_t bench_source_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)msg;
    bench_source_t *s = state;
    rill_system_t *sys = rill_ctx_system(ctx);
    /* acquire: pairs with the sink's release of its count. */
    uint64_t done = atomic_load_explicit(&s->flow->done, memory_order_acquire);
    rill_msg_t m = {.type = BENCH_MSG_DATA};
    while (s->sent < s->n && s->sent - (done < s->sent ? done : s->sent) < s->window) {
        m.arg = s->sent;
        if (rill_tell(sys, s->next, &m) != RILL_OK)
            break;
        s->sent++;
    }
    if (s->sent < s->n) {
        rill_msg_t go = {.type = BENCH_MSG_GO};
        rill_tell(sys, rill_self(ctx), &go);
    }
    return RILL_OK;
}

rill_err_t bench_sink_behavior(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    (void)msg;
    bench_flow_t *f = state;
    uint64_t d = atomic_load_explicit(&f->done, memory_order_relaxed) + 1;
    /* release: the sources read it to open their window. */
    atomic_store_explicit(&f->done, d, memory_order_release);
    if (d == f->total)
        bench_flow_finish(f);
    return RILL_OK;
}

rill_aid_t bench_spawn(const char *name, rill_system_t *sys, rill_behavior_fn *fn, void *state,
                       int executor)
{
    rill_spawn_opts_t o = {.behavior = fn, .state = state, .executor = RILL_EXECUTOR(executor)};
    rill_aid_t aid;
    if (rill_spawn(sys, &o, &aid)) {
        fprintf(stderr, "%s: spawn failed\n", name);
        exit(1);
    }
    return aid;
}

/* ---- the broker process ---- */

#define MAX_TOPICS 96

static pid_t broker_pid;
static char topics[MAX_TOPICS][64];
static int n_topics;

void bench_broker_path(const char *path, char *bin, size_t size)
{
    if (path) {
        snprintf(bin, size, "%s", path);
        return;
    }
    ssize_t len = readlink("/proc/self/exe", bin, size - 1);
    bin[len > 0 ? len : 0] = '\0';
    char *slash = strrchr(bin, '/');
    snprintf(slash ? slash + 1 : bin, size - (size_t)(slash ? slash + 1 - bin : 0),
             "../tools/rill-broker");
}

void bench_broker_topic(const char *fmt, ...)
{
    if (n_topics == MAX_TOPICS) {
        fprintf(stderr, "bench_broker_topic: more than %d topics\n", MAX_TOPICS);
        exit(1);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(topics[n_topics], sizeof(topics[n_topics]), fmt, ap);
    va_end(ap);
    n_topics++;
}

void bench_broker_start(const char *name, const char *bin, char *boot, size_t size)
{
    char file[128];
    int at = snprintf(file, sizeof(file), "/tmp/%s", name);
    for (char *c = file; *c; c++)
        if (*c == '_')
            *c = '-';
    snprintf(file + at, sizeof(file) - (size_t)at, "-boot-XXXXXX");
    int fd = mkstemp(file);
    if (fd < 0) {
        perror("mkstemp");
        exit(1);
    }
    close(fd);
    unlink(file);
    const char *argv[5 + 2 * MAX_TOPICS];
    int a = 0;
    argv[a++] = bin;
    for (int t = 0; t < n_topics; t++) {
        argv[a++] = "--topic";
        argv[a++] = topics[t];
    }
    argv[a++] = "--bootstrap-file";
    argv[a++] = file;
    argv[a++] = "--no-stdin";
    argv[a] = NULL;
    broker_pid = fork();
    if (broker_pid == 0) {
        execv(bin, (char *const *)argv);
        perror("exec rill-broker");
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(file, "r");
        if (f) {
            if (fgets(boot, (int)size, f))
                boot[strcspn(boot, "\n")] = '\0';
            fclose(f);
            if (*boot) {
                atexit(bench_broker_stop);
                return;
            }
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL); /* waiting for the broker process to write its address */
    }
    fprintf(stderr, "%s: rill-broker did not start (%s)\n", name, bin);
    exit(1);
}

void bench_broker_stop(void)
{
    if (broker_pid > 0) {
        kill(broker_pid, SIGTERM);
        waitpid(broker_pid, NULL, 0);
    }
}

void bench_raw_consumer_defaults(void *rd_kafka_conf)
{
    char err[256] = "";
    rill_consumer_conf_t *c = rill_consumer_conf_new();
    if (!c || rill__consumer_fetch_defaults(c, rd_kafka_conf, err, sizeof(err)) != RILL_OK) {
        fprintf(stderr, "bench: rill's consumer defaults: %s\n", err[0] ? err : "out of memory");
        exit(1);
    }
    rill_consumer_conf_destroy(c);
}

/* bench_conf_from_env's setter for a librdkafka conf. */
static int raw_conf_set(void *c, const char *k, const char *v, char *e, size_t es)
{
    return rd_kafka_conf_set(c, k, v, e, es) != RD_KAFKA_CONF_OK;
}

/* Sets NULL-ended key, value pairs (none if kv is NULL), or exits. */
static void raw_conf_pairs(const char *name, rd_kafka_conf_t *c, const char *const *kv)
{
    char err[512];
    for (int i = 0; kv && kv[i]; i += 2)
        if (raw_conf_set(c, kv[i], kv[i + 1], err, sizeof(err))) {
            fprintf(stderr, "%s: raw consumer config: %s\n", name, err);
            exit(1);
        }
}

rd_kafka_t *bench_raw_consumer(const char *name, const char *boot, const char *group,
                               const char *const *kv, const char *env_var)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *base[] = {
        "bootstrap.servers",        boot,    "group.id", group, "enable.auto.commit", "false",
        "enable.auto.offset.store", "false", NULL};
    bench_raw_consumer_defaults(c);
    raw_conf_pairs(name, c, base);
    raw_conf_pairs(name, c, kv);
    if (env_var)
        bench_conf_from_env(name, c, env_var, raw_conf_set);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "%s: raw consumer: %s\n", name, err);
        exit(1);
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

rd_kafka_t *bench_plain_consumer(const char *name, const char *boot, const char *group)
{
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    if (rd_kafka_conf_set(c, "bootstrap.servers", boot, err, sizeof(err)) ||
        rd_kafka_conf_set(c, "group.id", group, err, sizeof(err)) ||
        !(rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err)))) {
        fprintf(stderr, "%s: check client: %s\n", name, err);
        exit(1);
    }
    return rk;
}

void bench_end_offsets(const char *name, const char *boot, const char *topic, int parts,
                       int64_t *ends)
{
    rd_kafka_t *rk = bench_plain_consumer(name, boot, "bench-ends");
    for (int p = 0; p < parts; p++) {
        int64_t lo;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &ends[p], 10000);
        if (e) {
            fprintf(stderr, "%s: end offsets: %s\n", name, rd_kafka_err2str(e));
            exit(1);
        }
    }
    rd_kafka_destroy(rk);
}

int bench_uncommitted(const char *name, const char *boot, const char *group, const char *topic,
                      int parts, const int64_t *ends)
{
    rd_kafka_t *rk = bench_plain_consumer(name, boot, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, 10000);
    int bad = 0;
    for (int i = 0; i < l->cnt; i++)
        bad += e || l->elems[i].err || l->elems[i].offset != ends[l->elems[i].partition];
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return bad;
}

void bench_committer_init(bench_committer_t *c, rd_kafka_t *rk, uint64_t every)
{
    const char *mode = getenv("BENCH_RAW_COMMIT");
    *c = (bench_committer_t){.rk = rk, .every = every, .next = every};
    c->every_time = mode && !strcmp(mode, "every");
    if (!c->every_time && !(c->q = rd_kafka_queue_new(rk))) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
}

/* Serve one event of the committer's queue, waiting up to timeout_ms: 1 if
 * one came (a commit's answer takes that commit off `out`). */
static int committer_serve(bench_committer_t *c, int timeout_ms)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(c->q, timeout_ms);
    if (!ev)
        return 0;
    c->out -= rd_kafka_event_type(ev) == RD_KAFKA_EVENT_OFFSET_COMMIT;
    rd_kafka_event_destroy(ev);
    return 1;
}

void bench_committer_step(bench_committer_t *c, uint64_t done)
{
    while (c->out && committer_serve(c, 0))
        ;
    if (done < c->next || c->out)
        return;
    c->next = (done / c->every + 1) * c->every;
    if (c->every_time)
        rd_kafka_commit(c->rk, NULL, 1);
    else
        c->out +=
            rd_kafka_commit_queue(c->rk, NULL, c->q, NULL, NULL) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

void bench_committer_drain(bench_committer_t *c)
{
    double end = bench_now_s() + 10;
    while (c->out && bench_now_s() < end)
        committer_serve(c, 100);
}

void bench_committer_destroy(bench_committer_t *c)
{
    if (c->q)
        rd_kafka_queue_destroy(c->q);
    c->q = NULL;
}

int bench_sides(int run, int side[2])
{
    const char *only = getenv("BENCH_ONLY");
    if (only) {
        side[0] = strcmp(only, "rill") ? BENCH_SIDE_RAW : BENCH_SIDE_RILL;
        return 1;
    }
    side[0] = run % 2 ? BENCH_SIDE_RILL : BENCH_SIDE_RAW;
    side[1] = !side[0];
    return 2;
}

/* ---- consume -> uppercase -> produce ---- */

size_t bench_upper(char *dst, const void *src, size_t len)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < len; i++)
        dst[i] = (char)toupper(s[i]);
    return len;
}

void bench_pipe_init(bench_pipe_t *s, const char *in_topic, const char *out_topic)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->in_topic, sizeof(s->in_topic), "%s", in_topic);
    snprintf(s->topic, sizeof(s->topic), "%s", out_topic);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
}

void bench_pipe_destroy(bench_pipe_t *s)
{
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
}

void bench_pipe_committed(bench_pipe_t *s, const rd_kafka_topic_partition_list_t *offsets)
{
    pthread_mutex_lock(&s->lock);
    for (int i = 0; offsets && i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
        if (!tp->err && tp->partition >= 0 && tp->partition < BENCH_PIPE_MAX_PARTS &&
            !strcmp(tp->topic, s->in_topic) && tp->offset > s->committed[tp->partition]) {
            s->committed_sum += tp->offset - s->committed[tp->partition];
            s->committed[tp->partition] = tp->offset;
        }
    }
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void bench_pipe_on_commit(void *opaque, rd_kafka_resp_err_t err,
                          const rd_kafka_topic_partition_list_t *offsets)
{
    bench_pipe_committed(opaque, err ? NULL : offsets);
}

rill_err_t bench_pipe_map(void *opaque, rill_elem_t *in, rill_elem_t *out)
{
    bench_pipe_t *s = opaque;
    const rd_kafka_message_t *m = rill_record(in);
    char buf[4096];
    size_t len = bench_upper(buf, m->payload, m->len < sizeof(buf) ? m->len : sizeof(buf));
    rill_produce_t *p = rill_produce_new(s->topic, m->partition, m->key, m->key_len, buf, len);
    rill_elem_release(in);
    if (!p)
        return RILL_ENOMEM;
    *out = rill_produce_elem(p);
    return RILL_OK;
}

int64_t bench_committed_sum(const char *name, const char *boot, const char *group,
                            const char *topic, int parts)
{
    rd_kafka_t *rk = bench_plain_consumer(name, boot, group);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p);
    int64_t sum = -1;
    if (rd_kafka_committed(rk, l, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        sum = 0;
        for (int i = 0; i < l->cnt; i++)
            sum += l->elems[i].offset > 0 ? l->elems[i].offset : 0;
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return sum;
}

int bench_check_output(const char *name, const char *boot, const char *out_topic,
                       const char *in_topic, int parts, const char *group, int64_t committed,
                       uint64_t n, size_t value_len, const char *side, uint64_t *dups)
{
    char err[512];
    rill_consumed_t *out = NULL;
    rill_testkit_opts_t o = {.timeout_ms = 120000};
    *dups = 0;
    rill_err_t e =
        rill_testkit_consume(boot, out_topic, RILL_CONSUME_TO_END, &o, &out, err, sizeof(err));
    if (e) {
        fprintf(stderr, "%s: reading %s back: %s\n", name, out_topic, err);
        rill_consumed_destroy(out);
        return 0;
    }
    uint8_t *seen = calloc(n, 1);
    if (!seen) {
        fprintf(stderr, "%s: out of memory\n", name);
        exit(1);
    }
    uint64_t distinct = 0, dup = 0, bad = 0;
    for (size_t i = 0; i < rill_consumed_count(out); i++) {
        const rill_testkit_record_t *r = rill_consumed_at(out, i);
        char v[40] = "";
        uint64_t seq;
        if (r->value)
            memcpy(v, r->value, r->value_len < sizeof(v) - 1 ? r->value_len : sizeof(v) - 1);
        if (r->value_len != value_len || sscanf(v, "SEQ=%" SCNu64 " KEY=KEY-", &seq) != 1 ||
            seq >= n) {
            bad++;
            continue;
        }
        if (seen[seq]++)
            dup++;
        else
            distinct++;
    }
    free(seen);
    if (committed < 0)
        committed = bench_committed_sum(name, boot, group, in_topic, parts);
    int ok = distinct == n && !bad && committed == (int64_t)n;
    *dups = dup;
    if (!ok || dup || getenv("BENCH_VERBOSE"))
        printf("    %s check: output %zu records, %" PRIu64 " of %" PRIu64 " inputs, %" PRIu64
               " duplicates, %" PRIu64 " malformed; committed %" PRId64 " of %" PRIu64 "%s\n",
               side, rill_consumed_count(out), distinct, n, dup, bad, committed, n,
               ok ? "" : "  FAILED");
    rill_consumed_destroy(out);
    return ok;
}
