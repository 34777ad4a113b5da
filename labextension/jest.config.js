// jest with ts-jest, as in the JupyterLab extension template (tests in src/__tests__/*.spec.ts). The modules
// under test import only @lumino packages at run time (CommonJS builds), so no ES-module transform is needed.
module.exports = {
  testEnvironment: 'jsdom',
  setupFiles: ['<rootDir>/jest.setup.js'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }]
  },
  testRegex: 'src/.*/.*\\.spec\\.ts$',
  collectCoverageFrom: ['src/**/*.ts', '!src/**/*.d.ts', '!src/__tests__/**'],
  coverageReporters: ['text-summary', 'lcov']
};
