/** Tests run against real engines; e2e files spawn the built server (dist/) as a child process. */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "<rootDir>/test/tsconfig.jest.json" }] },
  moduleNameMapper: { "^(\\.{1,2}/.*)\\.js$": "$1" },
  testTimeout: 120000,
  setupFiles: ["reflect-metadata"],
  reporters: ["default", "<rootDir>/test/helpers/totals-reporter.js"],
};
