// What the line-oriented readers of mim's text files (samples, content
// vectors) say about a last line that ends without a newline.
//
// Every line mim writes ends with a newline, so a last line without one is
// what a file cut short leaves, and a number at its end may be truncated
// ("1234" cut to "12" still parses): the readers refuse it, naming the line,
// instead of reading a shortened id or value.
//
// Thread-safety: reentrant.
#ifndef MIM_WORKER_DATA_TEXT_LINES_H_
#define MIM_WORKER_DATA_TEXT_LINES_H_

namespace mim::data {

inline const char* UnterminatedLine() {
  return "the last line ends without a newline: the file looks cut short, "
         "and a number at its end may be truncated; every line mim writes "
         "ends with a newline, so if this line is complete, add one";
}

}  // namespace mim::data

#endif  // MIM_WORKER_DATA_TEXT_LINES_H_
