/*
 * The embedded broker: a thin, checked wrapper over librdkafka's mock
 * cluster, plus name tables for Kafka API keys and error codes so that tests
 * and the rill-broker control protocol can name faults in words.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <rill/testkit.h>

#include "../kafka/kconf.h"

/* The mock's thread retries a failed accept this often (see host_log_cb). */
#define ACCEPT_RETRY_MS       100
/* Accept failures this far apart are separate episodes, each logged. */
#define ACCEPT_EPISODE_GAP_MS 2000

struct rill_broker {
    rd_kafka_t *host; /* the client instance the mock cluster lives in */
    rd_kafka_mock_cluster_t *mock;
    int count;
    /* Accept failures of the mock's listeners (host_log_cb); touched only
     * by the mock's thread. */
    int64_t accept_fail_last_ms; /* 0: none yet */
    pthread_mutex_t topics_lock;
    struct known_topic *topics; /* topics known to exist (topic_exists) */
};

typedef struct known_topic {
    struct known_topic *next;
    char name[];
} known_topic_t;

/*
 * The mock's host client has no brokers to talk to; only real problems are
 * worth a line on stderr.
 *
 * One problem needs more: when accept() fails (out of file descriptors),
 * the mock's listener (librdkafka 2.0.2 and later) leaves the connection
 * queued, logs "Failed to accept mock broker socket" and polls again at
 * once: its thread spins a core and writes hundreds of thousands of lines
 * a second. This callback runs on that thread, so it logs the first
 * failure of an episode only, and waits ACCEPT_RETRY_MS before letting the
 * thread go on, which turns the spin into a retry every ACCEPT_RETRY_MS.
 * While the episode lasts, the mock's other connections are served between
 * those waits.
 */
static void host_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (level > 3)
        return;
    rill_broker_t *b = rd_kafka_opaque(rk);
    if (b && strstr(buf, "Failed to accept")) {
        int64_t now = rill__now_ms();
        if (!b->accept_fail_last_ms || now - b->accept_fail_last_ms > ACCEPT_EPISODE_GAP_MS) {
            rill_log(RILL_LOG_WARNING, "broker",
                     "%s: %s (retrying every %d ms; not logged again "
                     "until no accept has failed for %d s)",
                     fac, buf, ACCEPT_RETRY_MS, ACCEPT_EPISODE_GAP_MS / 1000);
        }
        b->accept_fail_last_ms = rill__now_ms();
        struct timespec ts = {.tv_sec = 0, .tv_nsec = ACCEPT_RETRY_MS * 1000000L};
        while (nanosleep(&ts, &ts) && errno == EINTR)
            ;
        return;
    }
    rill_log((rill_log_level_t)level, "broker", "%s: %s", fac, buf);
}

rill_broker_t *rill_broker_new(int broker_count, char *errstr, size_t errstr_size)
{
    if (broker_count < 1 || broker_count > RILL_BROKER_MAX) {
        rill__fail(RILL_EINVAL, errstr, errstr_size,
                   "broker count must be between 1 and %d, got %d", RILL_BROKER_MAX, broker_count);
        return NULL;
    }
    rill_broker_t *b = calloc(1, sizeof(*b));
    if (!b) {
        rill__fail(RILL_ENOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    char kerr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, host_log_cb);
    rd_kafka_conf_set_opaque(conf, b);
    if (rd_kafka_conf_set(conf, "client.id", "rill-embedded-broker", kerr, sizeof(kerr)) !=
        RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        free(b);
        rill__fail(RILL_EKAFKA, errstr, errstr_size, "embedded broker: %s", kerr);
        return NULL;
    }
    /* rd_kafka_new takes conf on success only. */
    b->host = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!b->host) {
        rd_kafka_conf_destroy(conf);
        free(b);
        rill__fail(RILL_EKAFKA, errstr, errstr_size, "embedded broker: %s", kerr);
        return NULL;
    }
    b->mock = rd_kafka_mock_cluster_new(b->host, broker_count);
    if (!b->mock) {
        rd_kafka_destroy(b->host);
        free(b);
        rill__fail(RILL_EKAFKA, errstr, errstr_size,
                   "embedded broker: librdkafka could not start a mock cluster of %d "
                   "broker(s) (no free loopback ports?)",
                   broker_count);
        return NULL;
    }
    b->count = broker_count;
    pthread_mutex_init(&b->topics_lock, NULL);
    return b;
}

void rill_broker_destroy(rill_broker_t *b)
{
    if (!b)
        return;
    rd_kafka_mock_cluster_destroy(b->mock);
    rd_kafka_destroy(b->host);
    while (b->topics) {
        known_topic_t *t = b->topics;
        b->topics = t->next;
        free(t);
    }
    pthread_mutex_destroy(&b->topics_lock);
    free(b);
}

const char *rill_broker_bootstraps(const rill_broker_t *b)
{
    return b ? rd_kafka_mock_cluster_bootstraps(b->mock) : NULL;
}

int rill_broker_count(const rill_broker_t *b)
{
    return b ? b->count : 0;
}

struct rd_kafka_mock_cluster_s *rill_broker_mock_cluster(rill_broker_t *b)
{
    return b ? b->mock : NULL;
}

static void remember_topic(rill_broker_t *b, const char *topic)
{
    size_t n = strlen(topic) + 1;
    known_topic_t *t = malloc(sizeof(*t) + n);
    if (!t)
        return; /* only a cache: topic_exists asks the cluster */
    memcpy(t->name, topic, n);
    pthread_mutex_lock(&b->topics_lock);
    t->next = b->topics;
    b->topics = t;
    pthread_mutex_unlock(&b->topics_lock);
}

static void quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

/*
 * Does topic exist? The mock creates a topic that any of its calls names
 * (rd_kafka_mock_partition_set_leader included), so this must not ask it
 * directly. Topics made by rill_broker_create_topic are remembered; any
 * other (auto-created by a client, or made through
 * rill_broker_mock_cluster()) is looked up in a Metadata request for all
 * topics, which creates nothing. RILL_OK with *exists set, or RILL_EKAFKA
 * when no broker answered (all down) within a second or two.
 */
static rill_err_t topic_exists(rill_broker_t *b, const char *topic, int *exists)
{
    *exists = 0;
    pthread_mutex_lock(&b->topics_lock);
    for (known_topic_t *t = b->topics; t && !*exists; t = t->next)
        *exists = !strcmp(t->name, topic);
    pthread_mutex_unlock(&b->topics_lock);
    if (*exists)
        return RILL_OK;

    char kerr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, quiet_log_cb);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", rill_broker_bootstraps(b), kerr,
                          sizeof(kerr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "client.id", "rill-embedded-broker-probe", kerr, sizeof(kerr)) !=
            RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return RILL_EKAFKA;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return RILL_EKAFKA;
    }
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, 2000);
    if (!e) {
        for (int i = 0; i < md->topic_cnt && !*exists; i++)
            *exists = !strcmp(md->topics[i].topic, topic) && !md->topics[i].err;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    if (e)
        return RILL_EKAFKA;
    if (*exists)
        remember_topic(b, topic);
    return RILL_OK;
}

rill_err_t rill_broker_create_topic(rill_broker_t *b, const char *topic, int partitions,
                                    int replication_factor, char *errstr, size_t errstr_size)
{
    if (!b)
        return rill__fail(RILL_EINVAL, errstr, errstr_size, "broker is NULL");
    rill_err_t err = rill__topic_name_check(topic, errstr, errstr_size);
    if (err)
        return err;
    if (partitions < 1 || partitions > 100000)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "topic \"%s\": partitions must be between 1 and 100000, got %d", topic,
                          partitions);
    if (replication_factor < 1 || replication_factor > b->count)
        return rill__fail(RILL_EINVAL, errstr, errstr_size,
                          "topic \"%s\": replication factor must be between 1 and the number of "
                          "brokers (%d), got %d",
                          topic, b->count, replication_factor);
    rd_kafka_resp_err_t kerr =
        rd_kafka_mock_topic_create(b->mock, topic, partitions, replication_factor);
    if (kerr == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        return rill__fail(RILL_EEXIST, errstr, errstr_size, "topic \"%s\" already exists", topic);
    if (kerr)
        return rill__fail(RILL_EKAFKA, errstr, errstr_size, "topic \"%s\": %s", topic,
                          rd_kafka_err2str(kerr));
    remember_topic(b, topic);
    return RILL_OK;
}

static rill_err_t broker_id_check(const rill_broker_t *b, int32_t broker_id)
{
    if (!b)
        return RILL_EINVAL;
    if (broker_id == RILL_BROKER_ALL)
        return RILL_OK;
    if (broker_id < 1 || broker_id > b->count)
        return RILL_ENOENT;
    return RILL_OK;
}

static rill_err_t from_mock(rd_kafka_resp_err_t kerr)
{
    switch (kerr) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return RILL_OK;
    case RD_KAFKA_RESP_ERR__UNKNOWN_BROKER:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return RILL_ENOENT;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return RILL_EINVAL;
    default:
        return RILL_EKAFKA;
    }
}

rill_err_t rill_broker_set_down(rill_broker_t *b, int32_t broker_id)
{
    rill_err_t err = broker_id_check(b, broker_id);
    return err ? err : from_mock(rd_kafka_mock_broker_set_down(b->mock, broker_id));
}

rill_err_t rill_broker_set_up(rill_broker_t *b, int32_t broker_id)
{
    rill_err_t err = broker_id_check(b, broker_id);
    return err ? err : from_mock(rd_kafka_mock_broker_set_up(b->mock, broker_id));
}

rill_err_t rill_broker_set_rtt(rill_broker_t *b, int32_t broker_id, int rtt_ms)
{
    rill_err_t err = broker_id_check(b, broker_id);
    if (err)
        return err;
    if (rtt_ms < 0)
        return RILL_EINVAL;
    return from_mock(rd_kafka_mock_broker_set_rtt(b->mock, broker_id, rtt_ms));
}

rill_err_t rill_broker_push_request_errors(rill_broker_t *b, int16_t api_key, size_t count,
                                           rd_kafka_resp_err_t err)
{
    if (!b || api_key < 0 || api_key > RILL_API_KEY_MAX || count == 0 || count > 1000000)
        return RILL_EINVAL;
    rd_kafka_resp_err_t *errs = malloc(count * sizeof(*errs));
    if (!errs)
        return RILL_ENOMEM;
    for (size_t i = 0; i < count; i++)
        errs[i] = err;
    rd_kafka_mock_push_request_errors_array(b->mock, api_key, count, errs);
    free(errs);
    return RILL_OK;
}

const char *const *rill_testkit_produce_faults_config(void)
{
    /* One Produce request in flight per connection: a batch that failed
     * is retried before any later batch of its partition is sent, so the
     * mock, which does not check an idempotent producer's sequences, can
     * never have a later batch succeed over a failed one (librdkafka would
     * take the failed one as written: IMPLICITACK). */
    static const char *const kv[] = {"max.in.flight.requests.per.connection", "1", NULL};
    /* Since 2.3.0 a batch failed again waits longer each time (KIP-580: 100
     * ms doubling up to retry.backoff.max.ms, 1 s). The mock fails the next
     * requests of a kind, however many there are: errors pushed on a clock
     * faster than the retries go out fail every retry, the backoff grows to
     * its cap and the producer stalls for good (2,671 of 3,000 delivered in
     * 90 s on 2.8.0, one run in CI; 133 at three errors every 300 ms). A
     * constant backoff, as 2.0.2 has, keeps the retries ahead of any
     * schedule of errors slower than one per retry. */
    static const char *const kv_kip580[] = {"max.in.flight.requests.per.connection", "1",
                                            "retry.backoff.max.ms", "100", NULL};
    return rd_kafka_version() >= 0x02030000 ? kv_kip580 : kv;
}

rill_err_t rill_broker_clear_request_errors(rill_broker_t *b, int16_t api_key)
{
    if (!b || api_key < 0 || api_key > RILL_API_KEY_MAX)
        return RILL_EINVAL;
    rd_kafka_mock_clear_request_errors(b->mock, api_key);
    return RILL_OK;
}

rill_err_t rill_broker_set_leader(rill_broker_t *b, const char *topic, int32_t partition,
                                  int32_t broker_id)
{
    if (!b || !topic || partition < 0)
        return RILL_EINVAL;
    if (broker_id != -1 && (broker_id < 1 || broker_id > b->count))
        return RILL_ENOENT;
    if (rill__topic_name_check(topic, NULL, 0))
        return RILL_EINVAL;
    int exists;
    rill_err_t err = topic_exists(b, topic, &exists);
    if (err)
        return err;
    if (!exists)
        return RILL_ENOENT;
    return from_mock(rd_kafka_mock_partition_set_leader(b->mock, topic, partition, broker_id));
}

/* Kafka protocol API keys 0..58, as named in the Kafka protocol guide. */
static const char *const api_names[RILL_API_KEY_MAX + 1] = {
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "LeaderAndIsr",
    "StopReplica",
    "UpdateMetadata",
    "ControlledShutdown",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "SaslHandshake",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
    "DeleteRecords",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "EndTxn",
    "WriteTxnMarkers",
    "TxnOffsetCommit",
    "DescribeAcls",
    "CreateAcls",
    "DeleteAcls",
    "DescribeConfigs",
    "AlterConfigs",
    "AlterReplicaLogDirs",
    "DescribeLogDirs",
    "SaslAuthenticate",
    "CreatePartitions",
    "CreateDelegationToken",
    "RenewDelegationToken",
    "ExpireDelegationToken",
    "DescribeDelegationToken",
    "DeleteGroups",
    "ElectLeaders",
    "IncrementalAlterConfigs",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "OffsetDelete",
    "DescribeClientQuotas",
    "AlterClientQuotas",
    "DescribeUserScramCredentials",
    "AlterUserScramCredentials",
    "Vote",
    "BeginQuorumEpoch",
    "EndQuorumEpoch",
    "DescribeQuorum",
    "AlterIsr",
    "UpdateFeatures",
    "Envelope",
};

/* Parse a whole decimal integer within [lo, hi]; returns 0 on success. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int16_t rill_api_key_from_name(const char *name)
{
    if (!name)
        return -1;
    long v;
    if (!parse_long(name, 0, RILL_API_KEY_MAX, &v))
        return (int16_t)v;
    for (int i = 0; i <= RILL_API_KEY_MAX; i++)
        if (!strcasecmp(name, api_names[i]))
            return (int16_t)i;
    if (!strcasecmp(name, "ApiVersion")) /* librdkafka's spelling */
        return 18;
    return -1;
}

const char *rill_api_key_name(int16_t api_key)
{
    if (api_key < 0 || api_key > RILL_API_KEY_MAX)
        return "?";
    return api_names[api_key];
}

rill_err_t rill_kafka_err_from_name(const char *name, rd_kafka_resp_err_t *err)
{
    if (!name || !err)
        return RILL_EINVAL;
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    long v;
    if (!parse_long(name, -200, 1000, &v)) {
        /* Accept only codes librdkafka knows, so typos fail loudly. */
        for (size_t i = 0; i < n; i++)
            if (descs[i].name && (long)descs[i].code == v) {
                *err = descs[i].code;
                return RILL_OK;
            }
        return RILL_EINVAL;
    }
    const char *bare = name;
    if (!strncasecmp(bare, "RD_KAFKA_RESP_ERR_", 18))
        bare += 18;
    for (size_t i = 0; i < n; i++)
        if (descs[i].name && !strcasecmp(bare, descs[i].name)) {
            *err = descs[i].code;
            return RILL_OK;
        }
    return RILL_EINVAL;
}
