// Table configs the shard tests create: an ID table (sgd, learning rate
// 0.5, zero-initialised, so a pushed gradient g reads back as -0.5 g) and a
// content table.
#ifndef MIM_TESTS_PS_TABLES_H_
#define MIM_TESTS_PS_TABLES_H_

#include <cstdint>
#include <string>

#include "proto/ps.pb.h"

namespace mim::testing {

inline ps::TableConfig IdTable(const std::string& name, uint32_t dim) {
  ps::TableConfig c;
  c.set_name(name);
  c.set_kind(ps::ID);
  c.set_dim(dim);
  c.mutable_optimizer()->set_name("sgd");
  c.mutable_optimizer()->set_learning_rate(0.5f);
  c.mutable_initializer()->set_name("zeros");
  return c;
}

inline ps::TableConfig ContentTable(const std::string& name, uint32_t dim) {
  ps::TableConfig c;
  c.set_name(name);
  c.set_kind(ps::CONTENT);
  c.set_dim(dim);
  return c;
}

}  // namespace mim::testing

#endif  // MIM_TESTS_PS_TABLES_H_
