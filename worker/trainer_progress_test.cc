#include "worker/trainer_progress.h"

#include <algorithm>
#include <sstream>

#include "gtest/gtest.h"

namespace mim::worker {
namespace {

TEST(ProgressBarTest, FormatsBarRateLossAndEta) {
  // 500 of 1000 at 100 samples/s: half a bar, 5 s left.
  EXPECT_EQ(ProgressBar::Format(1, 2, 500, 1000, 100.0, 0.5, false),
            "epoch 1/2 [==========>         ]  50.0%  500/1000  100 "
            "samples/s  loss 0.5000  ETA 0:05");
}

TEST(ProgressBarTest, FinishedLineSaysDoneAndHasNoEta) {
  EXPECT_EQ(ProgressBar::Format(2, 2, 1000, 1000, 250.0, 0.25, true),
            "epoch 2/2 [====================] 100.0%  1000/1000  250 "
            "samples/s  loss 0.2500  done");
}

TEST(ProgressBarTest, UnknownTotalShowsCountOnly) {
  EXPECT_EQ(ProgressBar::Format(1, 1, 42, 0, 10.0, 1.0, false),
            "epoch 1/1 42  10 samples/s  loss 1.0000");
}

TEST(ProgressBarTest, RewritesInPlaceAndEndsEpochWithNewline) {
  std::ostringstream out;
  ProgressBar bar(&out, 1, 1, 10, ProgressStyle::kInPlace);
  bar.Update(5, 0.7);
  bar.Finish(10, 0.6);
  const std::string text = out.str();
  EXPECT_EQ(text.front(), '\r');
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
  EXPECT_NE(text.find("10/10"), std::string::npos);
  EXPECT_NE(text.find("done"), std::string::npos);
}

TEST(ProgressBarTest, PlainLinesWhenNotATerminal) {
  std::ostringstream out;
  EXPECT_EQ(ProgressStyleFor(&out), ProgressStyle::kLines);
  ProgressBar bar(&out, 1, 2, 10);
  bar.Update(5, 0.7);  // the first update draws; the next within 5 s do not
  bar.Update(6, 0.7);
  bar.Finish(10, 0.6);
  const std::string text = out.str();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_NE(text.find("5/10"), std::string::npos);
  EXPECT_NE(text.find("10/10"), std::string::npos);
  EXPECT_EQ(text.back(), '\n');
}

}  // namespace
}  // namespace mim::worker
