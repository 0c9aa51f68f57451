#ifndef FQ_VERSION_H
#define FQ_VERSION_H
#define FLATQ_VERSION "0.1.0"
#endif
