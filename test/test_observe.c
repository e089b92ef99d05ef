/*
 * The observer (include/rill/observe.h) against the embedded broker:
 * lag per partition in /metrics is N - M, readiness follows the broker
 * (down: not ready, up again: ready), liveness ends when the root
 * supervisor gives up, the tree and the status JSON show the pipeline,
 * bad arguments are refused.
 */
#include "support/rtest.h"
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <rill/observe.h>

#include "support/actor_kit.h"
#include "support/kafka_kit.h"

/* The value of the sample `series` (name and labels exactly as written)
 * in a Prometheus text, or -1 when absent. */
static double sample_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

static double metric(rill_observer_t *obs, const char *series)
{
    char *text = NULL;
    cr_assert_eq(rill_observer_metrics(obs, &text, NULL), RILL_OK);
    double v = sample_of(text, series);
    free(text);
    return v;
}

/* The status code of GET path from the endpoint on port (-1 on error). */
static int http_status(uint16_t port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[256], rsp[64] = "";
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    int code = -1;
    if (!connect(fd, (struct sockaddr *)&a, sizeof(a)) && write(fd, req, (size_t)n) == n &&
        read(fd, rsp, sizeof(rsp) - 1) > 12)
        code = atoi(rsp + 9); /* "HTTP/1.1 503 ..." */
    close(fd);
    return code;
}

/* ---- lag is N - M per partition ----------------------------------------- */

#define LAG_PARTS 3
#define LAG_N     200 /* records per partition */
#define LAG_M     120 /* of those, confirmed (offsets 0 .. M-1) */

static int lag_is(rill_observer_t *obs, double want)
{
    for (int p = 0; p < LAG_PARTS; p++) {
        char series[160];
        snprintf(series, sizeof(series),
                 "rill_consumer_lag{group=\"obs-lag\",topic=\"lag\",partition=\"%d\"}", p);
        if (metric(obs, series) != want)
            return 0;
    }
    return 1;
}

Test(observe, lag_per_partition_is_produced_minus_confirmed, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "lag", LAG_PARTS, LAG_N, 16);
    const char *kv[] = {"statistics.interval.ms",
                        "100",
                        "rill.commit.interval.ms",
                        "100",
                        "auto.offset.reset",
                        "earliest",
                        NULL};
    rill_consumer_conf_t *cc = kk_conf_new(env.boot, "obs-lag", kv);
    kk_conf_subscribe1(cc, "lag");
    kk_holder_t *h = kk_holder_new(LAG_M, LAG_PARTS * LAG_N);
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "lagging");
    rill_pipeline_add(p, rill_kafka_source(cc), &(rill_stage_opts_t){.name = "source"});
    rill_pipeline_add(p, rill_sink_foreach_manual(kk_holder_sink, h), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start(p, err, sizeof(err)), RILL_OK, "%s", err);
    rill_observer_t *obs = rill_observer_new(env.sys, "lag-test");
    cr_assert_not_null(obs);
    cr_assert_eq(rill_observer_add_pipeline(obs, p), RILL_OK);

    int ok;
    KK_WAIT_UNTIL(ok, 30000, atomic_load(&h->confirmed) == LAG_PARTS * LAG_M);
    cr_assert(ok, "confirmed %ld of %d", atomic_load(&h->confirmed), LAG_PARTS * LAG_M);
    /* Committed M per partition, end N: the gauge says N - M. */
    KK_WAIT_UNTIL(ok, 20000, lag_is(obs, LAG_N - LAG_M));
    if (!ok) {
        char *text = NULL;
        rill_observer_metrics(obs, &text, NULL);
        fprintf(stderr, "%s\n", text ? text : "");
        free(text);
    }
    cr_assert(ok, "rill_consumer_lag is not %d on every partition", LAG_N - LAG_M);
    cr_assert_eq(metric(obs, "rill_consumer_paused{pipeline=\"lagging\",stage=\"source\","
                             "group=\"obs-lag\"}"),
                 0);

    /* The held records confirmed: the lag falls to 0. */
    kk_holder_confirm_all(h);
    KK_WAIT_UNTIL(ok, 20000, lag_is(obs, 0));
    cr_assert(ok, "the lag did not fall to 0");

    rill_observer_free(obs);
    rill_pipeline_destroy(p);
    kk_holder_free(h); /* releases what it holds: before the system goes */
    kk_env_fini(&env);
}

/* ---- readiness follows the broker ----------------------------------------- */

static int ready_is(rill_observer_t *obs, int want, char *reason, size_t size)
{
    char *json = NULL;
    int r = rill_observer_ready(obs, &json);
    snprintf(reason, size, "%s", json ? json : "(none)");
    free(json);
    return r == want;
}

Test(observe, readiness_is_lost_while_the_broker_is_down_and_comes_back, .timeout = 180)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "ready", 2, 50, 16);
    const char *kv[] = {"statistics.interval.ms", "200", "auto.offset.reset", "earliest", NULL};
    rill_consumer_conf_t *cc = kk_conf_new(env.boot, "obs-ready", kv);
    kk_conf_subscribe1(cc, "ready");
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "ready");
    rill_pipeline_add(p, rill_kafka_source(cc), &(rill_stage_opts_t){.name = "source"});
    rill_pipeline_add(p, rill_sink_ignore(), NULL);
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, NULL, err, sizeof(err)), RILL_OK, "%s", err);
    rill_observer_t *obs = rill_observer_new(env.sys, NULL);
    cr_assert_eq(rill_observer_add_pipeline(obs, p), RILL_OK);
    rill_http_t *http = NULL;
    cr_assert_eq(rill_http_start(obs, NULL, &http, err, sizeof(err)), RILL_OK, "%s", err);
    uint16_t port = rill_http_port(http);

    char why[400] = "";
    int ok;
    KK_WAIT_UNTIL(ok, 30000, ready_is(obs, 1, why, sizeof(why)));
    cr_assert(ok, "never ready: %s", why);
    cr_assert_eq(rill_observer_live(obs, NULL), 1);
    cr_assert_eq(http_status(port, "/health/ready"), 200);

    cr_assert_eq(rill_broker_set_down(env.broker, 1), RILL_OK);
    KK_WAIT_UNTIL(ok, 30000, ready_is(obs, 0, why, sizeof(why)));
    cr_assert(ok, "still ready with the broker down: %s", why);
    cr_assert(strstr(why, "brokers"), "the reason does not name the brokers: %s", why);
    cr_assert_eq(rill_observer_live(obs, NULL), 1, "a broker outage is not death");
    cr_assert_eq(metric(obs, "rill_ready"), 0);
    cr_assert_eq(http_status(port, "/health/ready"), 503);
    cr_assert_eq(http_status(port, "/health/live"), 200);

    cr_assert_eq(rill_broker_set_up(env.broker, 1), RILL_OK);
    KK_WAIT_UNTIL(ok, 60000, ready_is(obs, 1, why, sizeof(why)));
    cr_assert(ok, "not ready again after the broker came back: %s", why);
    cr_assert_eq(metric(obs, "rill_ready"), 1);
    KK_WAIT_UNTIL(ok, 10000, http_status(port, "/health/ready") == 200);
    cr_assert(ok, "/health/ready did not answer 200 again");

    rill_http_stop(http);
    rill_observer_free(obs);
    rill_pipeline_destroy(p);
    kk_env_fini(&env);
}

/* ---- liveness ends when the root supervisor gives up ---------------------- */

enum { MSG_FAIL = RILL_MSG_USER + 1 };

static rill_err_t fail_on_demand(rill_ctx_t *ctx, void *state, rill_msg_t *msg)
{
    (void)ctx;
    (void)state;
    return msg->type == MSG_FAIL ? RILL_EINVAL : RILL_OK;
}

static rill_err_t start_worker(void *arg, rill_spawn_opts_t *opts)
{
    (void)arg;
    opts->behavior = fail_on_demand;
    return RILL_OK;
}

static rill_aid_t child_aid(rill_system_t *sys, rill_aid_t sup)
{
    rill_child_info_t info[2];
    size_t n = 0;
    if (rill_sup_children(sys, sup, info, 2, &n) || n < 1)
        return RILL_AID_NONE;
    return info[0].aid;
}

Test(observe, liveness_ends_when_the_root_supervisor_gives_up, .timeout = 60)
{
    rill_system_t *sys = kit_system(2, 64, 0, 1);
    rill_child_spec_t kids[] = {{.id = "worker", .start = start_worker}};
    rill_sup_spec_t spec = {.strategy = RILL_SUP_ONE_FOR_ONE,
                            .intensity = 1,
                            .period_ms = 60000,
                            .children = kids,
                            .n_children = 1};
    rill_aid_t sup;
    char err[256] = "";
    cr_assert_eq(rill_sup_start(sys, &spec, "root", &sup, err, sizeof(err)), RILL_OK, "%s", err);
    rill_observer_t *obs = rill_observer_new(sys, "live-test");
    cr_assert_eq(rill_observer_add_supervisor(obs, sup, "root"), RILL_OK);
    rill_http_t *http = NULL;
    cr_assert_eq(rill_http_start(obs, NULL, &http, err, sizeof(err)), RILL_OK, "%s", err);
    cr_assert_eq(http_status(rill_http_port(http), "/health/live"), 200);
    char *json = NULL;
    cr_assert_eq(rill_observer_live(obs, &json), 1, "%s", json);
    free(json);

    /* One failure: restarted (intensity 1), still live, and the tree and
     * the metrics say so. */
    rill_aid_t w = child_aid(sys, sup);
    cr_assert(!rill_aid_is_none(w));
    cr_assert_eq(rill_tell(sys, w, &(rill_msg_t){.type = MSG_FAIL}), RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, 10000,
                  (!rill_aid_is_none(child_aid(sys, sup)) && !rill_aid_eq(child_aid(sys, sup), w)));
    cr_assert(ok, "the worker was not restarted");
    cr_assert_eq(rill_observer_live(obs, NULL), 1);
    cr_assert_eq(
        metric(obs, "rill_supervisor_restarts_total{supervisor=\"root\",child=\"worker\"}"), 1);
    char *tree = NULL;
    cr_assert_eq(rill_observer_tree(obs, 0, &tree), RILL_OK);
    cr_assert(strstr(tree, "\"id\":\"worker\"") && strstr(tree, "\"restarts\":1"), "%s", tree);
    free(tree);
    cr_assert_eq(rill_observer_tree(obs, 1, &tree), RILL_OK);
    cr_assert(!strncmp(tree, "digraph", 7) && strstr(tree, "\"root/worker\""), "%s", tree);
    free(tree);

    /* A second failure within the period: the supervisor gives up. */
    cr_assert_eq(rill_tell(sys, child_aid(sys, sup), &(rill_msg_t){.type = MSG_FAIL}), RILL_OK);
    KK_WAIT_UNTIL(ok, 10000, rill_observer_live(obs, NULL) == 0);
    cr_assert(ok, "still live after the root supervisor gave up");
    cr_assert_eq(rill_observer_live(obs, &json), 0);
    cr_assert(strstr(json, "\"dead\"") && strstr(json, "root"), "%s", json);
    free(json);
    cr_assert_eq(rill_observer_ready(obs, NULL), 0);
    cr_assert_eq(metric(obs, "rill_live"), 0);
    cr_assert_eq(http_status(rill_http_port(http), "/health/live"), 503);
    cr_assert_eq(http_status(rill_http_port(http), "/health/ready"), 503);

    rill_http_stop(http);
    rill_observer_free(obs);
    cr_assert_eq(rill_system_stop(sys, 10000), RILL_OK);
    rill_system_destroy(sys);
}

Test(observe, a_root_stopped_normally_is_not_death, .timeout = 60)
{
    rill_system_t *sys = kit_system(1, 64, 0, 1);
    rill_child_spec_t kids[] = {{.id = "worker", .start = start_worker}};
    rill_sup_spec_t spec = {.children = kids, .n_children = 1};
    rill_aid_t sup;
    char err[256] = "";
    cr_assert_eq(rill_sup_start(sys, &spec, NULL, &sup, err, sizeof(err)), RILL_OK, "%s", err);
    rill_observer_t *obs = rill_observer_new(sys, NULL);
    cr_assert_eq(rill_observer_add_supervisor(obs, sup, NULL), RILL_OK);
    cr_assert_eq(rill_sup_stop(sys, sup, 5000), RILL_OK);
    cr_assert_eq(rill_observer_live(obs, NULL), 1);
    rill_observer_free(obs);
    cr_assert_eq(rill_system_stop(sys, 10000), RILL_OK);
    rill_system_destroy(sys);
}

/* ---- the status document and the metrics' shape --------------------------- */

Test(observe, status_and_metrics_describe_a_running_pipeline, .timeout = 120)
{
    kk_env_t env;
    kk_env_init(&env);
    kk_load_topic(&env, "st", 2, 500, 16);
    const char *kv[] = {"auto.offset.reset", "earliest", NULL};
    rill_consumer_conf_t *cc = kk_conf_new(env.boot, "obs-st", kv);
    kk_conf_subscribe1(cc, "st");
    rill_pipeline_t *p = rill_pipeline_new(env.sys, "st\"quoted\"");
    rill_pipeline_add(p, rill_kafka_source(cc), &(rill_stage_opts_t){.name = "source"});
    rill_pipeline_add(p, rill_sink_ignore(), &(rill_stage_opts_t){.name = "sink"});
    char err[256] = "";
    cr_assert_eq(rill_pipeline_start_supervised(p, NULL, err, sizeof(err)), RILL_OK, "%s", err);
    rill_observer_t *obs = rill_observer_new(env.sys, "svc");
    cr_assert_eq(rill_observer_add_pipeline(obs, p), RILL_OK);
    int ok;
    KK_WAIT_UNTIL(ok, 30000,
                  metric(obs, "rill_consumer_records_confirmed_total{pipeline=\"st\\\"quoted\\\"\","
                              "stage=\"source\",group=\"obs-st\"}") == 1000);
    cr_assert(ok, "the confirmed total never reached 1000");

    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(rill_observer_metrics(obs, &text, &len), RILL_OK);
    cr_assert_eq(len, strlen(text));
    const char *families[] = {"# TYPE rill_consumer_lag gauge",
                              "# TYPE rill_commit_latency_seconds histogram",
                              "# TYPE rill_e2e_latency_seconds histogram",
                              "# TYPE rill_delivery_latency_seconds histogram",
                              "# TYPE rill_mailbox_depth gauge",
                              "# TYPE rill_supervisor_restarts_total counter",
                              "# TYPE rill_executor_busy_seconds_total counter",
                              "rill_mailbox_capacity{pipeline=\"st\\\"quoted\\\"\",stage=\"sink\"}",
                              ("rill_e2e_latency_seconds_bucket{pipeline=\"st\\\"quoted\\\"\","
                               "stage=\"source\",group=\"obs-st\",le=\"+Inf\"} 1000"),
                              "rill_executor_busy_seconds_total{executor=\"1\"}"};
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++)
        cr_expect(strstr(text, families[i]), "no %s in:\n%s", families[i], text);
    free(text);

    char *st = NULL;
    cr_assert_eq(rill_observer_status(obs, &st), RILL_OK);
    const char *keys[] = {"\"service\":\"svc\"",
                          "\"name\":\"st\\\"quoted\\\"\"",
                          "\"kind\":\"kafka-source\"",
                          "\"group\":\"obs-st\"",
                          "\"partitions\":[{",
                          "\"e2e_latency\":{\"count\":1000",
                          "\"id\":\"st\\\"quoted\\\"-supervisor\"",
                          "\"busy_ratio\":"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_expect(strstr(st, keys[i]), "no %s in:\n%s", keys[i], st);
    free(st);

    rill_observer_free(obs);
    rill_pipeline_destroy(p);
    kk_env_fini(&env);
}

/* ---- bad arguments -------------------------------------------------------- */

typedef struct exec_arg {
    rill_observer_t *obs;
    rill_err_t err;
} exec_arg_t;

static void on_executor(rill_ctx_t *ctx, void *arg)
{
    (void)ctx;
    exec_arg_t *a = arg;
    char *text = NULL;
    a->err = rill_observer_metrics(a->obs, &text, NULL);
    free(text);
}

Test(observe, bad_arguments_are_refused, .timeout = 30)
{
    cr_assert_null(rill_observer_new(NULL, "x"));
    rill_system_t *sys = kit_system(1, 64, 0, 1);
    rill_observer_t *obs = rill_observer_new(sys, NULL);
    cr_assert_not_null(obs);
    cr_assert_eq(rill_observer_add_pipeline(NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_observer_add_pipeline(obs, NULL), RILL_EINVAL);
    cr_assert_eq(rill_observer_add_supervisor(obs, RILL_AID_NONE, "x"), RILL_EINVAL);
    cr_assert_eq(rill_observer_add_store(obs, NULL, "x"), RILL_EINVAL);
    cr_assert_eq(rill_observer_add_table(obs, NULL, "x"), RILL_EINVAL);
    cr_assert_eq(rill_observer_metrics(obs, NULL, NULL), RILL_EINVAL);
    cr_assert_eq(rill_observer_tree(NULL, 0, &(char *){NULL}), RILL_EINVAL);
    cr_assert_eq(rill_observer_live(NULL, NULL), 0);
    rill_observer_free(NULL);

    /* Nothing watched: live and ready, and the text still parses. */
    cr_assert_eq(rill_observer_live(obs, NULL), 1);
    cr_assert_eq(rill_observer_ready(obs, NULL), 1);

    /* On an executor it refuses (it would ask actors and wait). */
    exec_arg_t arg = {.obs = obs, .err = RILL_OK};
    kit_log_t *log = kit_log_new();
    rill_aid_t a = kit_spawn_recorder(sys, log, -1);
    cr_assert_eq(kit_run_in(sys, a, on_executor, &arg), RILL_OK);
    cr_assert_eq(arg.err, RILL_ESTATE);

    rill_observer_free(obs);
    cr_assert_eq(rill_system_stop(sys, 10000), RILL_OK);
    rill_system_destroy(sys);
    kit_log_free(log);
}
