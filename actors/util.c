/* Error strings and the version: the bottom of the library. */
#include "util.h"

static const struct {
    const char *name;
    const char *text;
} err_table[RILL_ERR__COUNT] = {
    [RILL_OK] = {"RILL_OK", "success"},
    [RILL_EINVAL] = {"RILL_EINVAL", "invalid argument"},
    [RILL_ENOMEM] = {"RILL_ENOMEM", "out of memory"},
    [RILL_EFULL] = {"RILL_EFULL", "mailbox full"},
    [RILL_ESTOPPED] = {"RILL_ESTOPPED", "stopped"},
    [RILL_ETIMEDOUT] = {"RILL_ETIMEDOUT", "timed out"},
    [RILL_ENOENT] = {"RILL_ENOENT", "no such entity"},
    [RILL_EEXIST] = {"RILL_EEXIST", "already exists"},
    [RILL_ESTATE] = {"RILL_ESTATE", "invalid state for this operation"},
    [RILL_EKAFKA] = {"RILL_EKAFKA", "Kafka client error"},
    [RILL_EIO] = {"RILL_EIO", "operating system error"},
    [RILL_ERESTARTING] = {"RILL_ERESTARTING", "restarting"},
    [RILL_EOS] = {"RILL_EOS", "end of stream"},
};

const char *rill_err2str(rill_err_t err)
{
    if ((unsigned)err >= RILL_ERR__COUNT)
        return "unknown error";
    return err_table[err].text;
}

const char *rill_err_name(rill_err_t err)
{
    if ((unsigned)err >= RILL_ERR__COUNT)
        return "RILL_E?";
    return err_table[err].name;
}

const char *rill_version_str(void)
{
    return RILL_VERSION_STR;
}
