/*
 * The status page's files (observe/page/), embedded into the library at
 * build time: cmake/embed.cmake writes them as byte arrays into a C file
 * of the build tree (observe/page_embed.c). Each array is followed by a
 * NUL byte that its length does not count.
 */
#ifndef RILL_OBSERVE_PAGE_H
#define RILL_OBSERVE_PAGE_H

#include <stddef.h>

extern const unsigned char rill__page_index_html[];
extern const size_t rill__page_index_html_len;
extern const unsigned char rill__page_app_js[];
extern const size_t rill__page_app_js_len;
extern const unsigned char rill__page_app_css[];
extern const size_t rill__page_app_css_len;

#endif /* RILL_OBSERVE_PAGE_H */
