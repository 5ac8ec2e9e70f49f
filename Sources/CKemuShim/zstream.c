#include "CKemuShim.h"

#include <stdlib.h>
#include <zlib.h>

struct kemu_zstream {
    z_stream z;
    int deflating;
    const unsigned char *dictionary;
    unsigned int length;
};

kemu_zstream *kemu_zstream_new(int deflating, const unsigned char *dictionary, unsigned int length) {
    kemu_zstream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->deflating = deflating;
    s->dictionary = dictionary;
    s->length = length;
    int rc = deflating ? deflateInit(&s->z, Z_DEFAULT_COMPRESSION) : inflateInit(&s->z);
    if (rc != Z_OK) { free(s); return NULL; }
    if (deflating && deflateSetDictionary(&s->z, dictionary, length) != Z_OK) {
        deflateEnd(&s->z);
        free(s);
        return NULL;
    }
    return s;
}

long kemu_zstream_run(kemu_zstream *s, const unsigned char *input, unsigned long length,
                      unsigned char *output, unsigned long capacity) {
    s->z.next_in = (unsigned char *)input;
    s->z.avail_in = (uInt)length;
    s->z.next_out = output;
    s->z.avail_out = (uInt)capacity;
    for (;;) {
        int rc = s->deflating ? deflate(&s->z, Z_SYNC_FLUSH) : inflate(&s->z, Z_SYNC_FLUSH);
        if (rc == Z_NEED_DICT) {
            // The peer compressed against the dictionary: it is set once, when first asked for.
            if (s->deflating || inflateSetDictionary(&s->z, s->dictionary, s->length) != Z_OK) return -1;
            continue;
        }
        if (rc == Z_STREAM_END) break;
        if (rc != Z_OK && rc != Z_BUF_ERROR) return -1;
        // Done when every input byte is in and the output has room left (a sync flush that
        // fills the output may have more to give).
        if (s->z.avail_in == 0 && s->z.avail_out > 0) break;
        if (s->z.avail_out == 0) return -2;
        if (rc == Z_BUF_ERROR) return -1;
    }
    return (long)(capacity - s->z.avail_out);
}

void kemu_zstream_free(kemu_zstream *s) {
    if (!s) return;
    if (s->deflating) deflateEnd(&s->z); else inflateEnd(&s->z);
    free(s);
}
