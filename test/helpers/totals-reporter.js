/**
 * Prints jest's totals as one plain line, `N passed, N failed[, N skipped]`, so CI logs carry the
 * count (CI itself reads only the exit code).
 */
class TotalsReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    process.stdout.write(`\n${results.numPassedTests} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}\n`);
  }
}
module.exports = TotalsReporter;
